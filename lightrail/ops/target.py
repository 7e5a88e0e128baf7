"""Which cluster and namespace a command acts on, decided once and shown before any change.

`--kube-context` wins over the kubeconfig's current context; every command the executor runs
then names that context explicitly (`kubectl --context=...`, `helm --kube-context=...`), so a
context switch in another terminal cannot redirect a deploy half-way.
"""
from __future__ import annotations

from dataclasses import dataclass

from lightrail.errors import LightrailError
from lightrail.plan import RESERVED_NAMESPACES, check_namespace_name


@dataclass(frozen=True)
class Target:
    context: str | None  # None: a dry run with no kube context (its commands then name none)
    namespace: str
    source: str          # why this context: "--kube-context" or "current context"

    def banner(self) -> str:
        where = f"context {self.context} ({self.source})" if self.context else "no kube context"
        return f"{where}, namespace {self.namespace}"

    def kubectl(self, *args: str) -> tuple[str, ...]:
        return (f"--context={self.context}", *args) if self.context else args

    def helm(self, *args: str) -> tuple[str, ...]:
        return (f"--kube-context={self.context}", *args) if self.context else args


def resolve(requested: str | None, contexts: list[str], current: str | None, namespace: str) -> Target:
    """The target for a command, or an error naming the valid contexts."""
    check_namespace(namespace)
    if requested:
        if contexts and requested not in contexts:
            raise LightrailError(f"kube context {requested!r} is not in your kubeconfig; valid: {', '.join(contexts)}")
        return Target(requested, namespace, "--kube-context")
    if not current:
        valid = f"; valid: {', '.join(contexts)}" if contexts else ""
        raise LightrailError(f"no current kube context and no --kube-context given{valid}",
                             fix="pass --kube-context=NAME or run `kubectl config use-context NAME`")
    if contexts and current not in contexts:
        raise LightrailError(f"the kubeconfig's current-context {current!r} is not one of its contexts; "
                             f"valid: {', '.join(contexts)}",
                             fix="pass --kube-context=NAME or run `kubectl config use-context NAME`")
    return Target(current, namespace, "current context")


def check_namespace(namespace: str) -> None:
    """A namespace Lightrail may act on: a valid name, and not one of the cluster's own."""
    check_namespace_name(namespace)
    if namespace in RESERVED_NAMESPACES:
        raise LightrailError(f"refusing to act on namespace {namespace!r}; valid: any namespace except "
                             f"{', '.join(RESERVED_NAMESPACES)}")
