"""TLS ingress: an HTTPS listener on the deployment's gateway, its certificate from a Secret or cert-manager.

Pure values from the request. llmd: llm-d-infra's `gateway.listeners[].tls` (and cert-manager's
Gateway annotation); kserve: KServe never edits Gateway listeners, so Lightrail provides an HTTPS
Gateway and attaches the LLMInferenceServices to it (`spec.router.gateway.refs`). docs/tls.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lightrail.errors import LightrailError

HTTPS_PORT = 443
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Gateway API's listener hostname: a DNS name, optionally with a leading wildcard label.
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Tls:
    secret: str               # the Secret the listener serves (cert-manager writes it when issuer is set)
    issuer: str | None        # cert-manager Issuer in the namespace, or None for a Secret the user made
    hostname: str | None

    def annotations(self) -> dict[str, str]:
        """cert-manager's gateway-shim issues a certificate for each listener hostname of an annotated Gateway."""
        return {"cert-manager.io/issuer": self.issuer} if self.issuer else {}

    def listener(self) -> dict:
        listener = {"name": "https", "port": HTTPS_PORT, "protocol": "HTTPS",
                    "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": self.secret}]}}
        if self.hostname:
            listener["hostname"] = self.hostname
        return listener


def tls(secret: str | None, issuer: str | None, hostname: str | None, gateway: str, stack: str,
        multimodel: bool) -> Tls | None:
    """The request's TLS, checked; None for plain HTTP."""
    if not (secret or issuer):
        if hostname:
            raise LightrailError("--hostname names the HTTPS listener: give --tls-secret=NAME or --cert-manager-issuer=NAME too")
        return None
    if secret and issuer:
        raise LightrailError("give one of --tls-secret=NAME (a Secret you made) or --cert-manager-issuer=NAME "
                             "(cert-manager writes the Secret), not both")
    for flag, name in (("--tls-secret", secret), ("--cert-manager-issuer", issuer)):
        if name and not (_DNS_NAME.match(name) and len(name) <= 253):
            raise LightrailError(f"{flag} {name!r} is not a valid Kubernetes name: lowercase letters, digits, '-' and '.'")
    if hostname and not (_HOSTNAME.match(hostname) and len(hostname) <= 253):
        raise LightrailError(f"--hostname {hostname!r} is not a DNS name (e.g. llm.example.com or *.example.com)")
    if not hostname and (issuer or stack == "llmd"):
        why = ("cert-manager issues certificates for the listener's hostname" if issuer else
               "llm-d-infra v1.4.0 writes listener.tls.hostname as the listener's hostname, and Gateway API "
               "refuses an empty one")
        raise LightrailError(f"--hostname is required here: {why}", fix="e.g. --hostname=llm.example.com")
    if stack == "kserve" and multimodel:
        raise LightrailError("TLS ingress for multimodel on kserve is not built: Lightrail's body-based router "
                             "(an EnvoyFilter) is wired to KServe's shared kserve-ingress-gateway, not to an own "
                             "HTTPS Gateway", fix="use --stack=llmd, or baseline/caching/moe on kserve")
    return Tls(secret=secret or f"{gateway}-tls", issuer=issuer, hostname=hostname)


def kserve_gateway(plan, t: Tls, class_name: str = "istio") -> dict:
    """The HTTPS Gateway the kserve stack provides (KServe's own stays as it is): routes from this namespace."""
    listener = {**t.listener(), "allowedRoutes": {"namespaces": {"from": "Same"}}}
    meta = {"name": plan.gateway.name, "namespace": plan.namespace}
    if t.annotations():
        meta["annotations"] = t.annotations()
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": meta,
            "spec": {"gatewayClassName": class_name, "listeners": [listener]}}
