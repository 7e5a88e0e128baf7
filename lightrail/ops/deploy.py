"""Deploy planning: desired objects + what the cluster holds now -> the steps that close the gap.

Pure. `plan_deploy` compares every desired object with its live counterpart (only the fields
we set; the server adds defaults), refuses objects that belong to someone else, and emits only
the steps that change something: a second deploy of the same thing plans nothing. Each step
records what it changes (object before, or helm release revision before), and
`plan_rollback` turns the steps that started into the steps that undo them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lightrail import podsecurity
from lightrail.errors import LightrailError
from lightrail.ops import steps as st
from lightrail.ops.objects import (HELM_RELEASE, MANAGED_BY_LABEL, annotations, deployment_of, difference, is_custom,
                                   key, manager, meta, ref, sendable, stub)
from lightrail.ops.secrets import DIGEST_ANNOTATION, Token, secret_object
from lightrail.ops.target import Target
from lightrail.plan import RESERVED_NAMESPACES, Plan

CREATED_BY = "lightrail.dev/created-by"


@dataclass
class Desired:
    """What a deploy wants on the cluster, as the stack renders it."""

    objects: list[dict]                                        # every object, in apply order
    releases: dict[str, list[dict]] = field(default_factory=dict)   # llmd: release -> its objects, in order
    helmfile: tuple[str, ...] = ()                             # llmd: helmfile args before the verb
    files: dict[str, str] = field(default_factory=dict)        # tool inputs, shown by dry runs
    inputs: Path | None = None                                 # llmd: the directory they are kept in


@dataclass
class Live:
    """The cluster before the deploy: only what the decisions need."""

    namespaces: set[str] = field(default_factory=set)
    objects: dict[tuple, dict] = field(default_factory=dict)   # key(obj) -> live object, for desired keys
    releases: dict[str, dict] = field(default_factory=dict)    # helm list entries by release name
    secret: dict | None = None                                 # the HF token Secret, data stripped
    namespace_labels: dict[str, str] | None = None             # the plan's namespace's labels, when it exists
    in_releases: dict[str, list[dict]] = field(default_factory=dict)   # llmd: release -> its live objects


@dataclass
class DeployPlan:
    steps: list[st.Step]
    changed: list[str]       # "what: why"
    unchanged: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return any(s.changes for s in self.steps)


def plan_deploy(plan: Plan, desired: Desired, live: Live, target: Target, token: Token | None = None,
                wait: bool = True, timeout: float = 900, smoke: bool = False) -> DeployPlan:
    """The steps of a deploy, or LightrailError when it would touch what is not ours."""
    _refuse_reserved(desired.objects)
    problems = conflicts(plan, desired, live)
    if problems:
        raise LightrailError("refusing to deploy: objects exist that this deployment does not own:\n  "
                             + "\n  ".join(problems),
                             fix="remove them, `invoke teardown` the deployment they belong to, or use another --namespace")
    out = DeployPlan(steps=[], changed=[], unchanged=[])
    _namespace_steps(plan, desired, live, target, out)
    _secret_step(plan, live, target, token, out)
    if plan.stack == "llmd":
        _release_steps(desired, live, target, out)
    else:
        _object_steps(desired, live, target, out)
    if wait:
        out.steps.append(st.Step(f"wait until ready (timeout {timeout:.0f} s)", action="wait",
                                 objects=tuple(desired.objects), timeout=timeout))
    if smoke:
        out.steps.append(st.Step("smoke: real requests through the endpoint", action="smoke"))
    return out


def conflicts(plan: Plan, desired: Desired, live: Live) -> list[str]:
    """Desired objects that exist and belong to another deployment, helm release or controller."""
    mine = (plan.pattern.name, plan.stack)
    problems = []
    for obj in desired.objects:
        current = live.objects.get(key(obj))
        if current is None:
            continue
        owner = deployment_of(current)
        release = annotations(current).get(HELM_RELEASE)
        controller = next((o for o in meta(current).get("ownerReferences") or [] if o.get("controller")), None)
        if owner != mine:
            whose = f"Lightrail deployment {owner[0]} ({owner[1]})" if owner else manager(current)
            problems.append(f"{ref(obj)} belongs to {whose}")
        elif controller:
            problems.append(f"{ref(obj)} is controlled by {controller.get('kind')} {controller.get('name')}")
        elif plan.stack == "llmd" and release not in desired.releases:
            problems.append(f"{ref(obj)} is not in any of this deployment's helm releases ({manager(current)})")
        elif plan.stack == "kserve" and release:
            problems.append(f"{ref(obj)} belongs to helm release {release}")
    if live.secret is not None and deployment_of(live.secret) is None:
        problems.append(f"{ref(live.secret)} exists and was not created by Lightrail ({manager(live.secret)})")
    return problems


def _refuse_reserved(objects: list[dict]) -> None:
    bad = sorted({ref(o) for o in objects if meta(o).get("namespace") in RESERVED_NAMESPACES})
    if bad:
        raise LightrailError(f"refusing to write into {', '.join(RESERVED_NAMESPACES)}: {', '.join(bad)}")


def _namespace_steps(plan: Plan, desired: Desired, live: Live, target: Target, out: DeployPlan) -> None:
    needed = {meta(o).get("namespace") for o in desired.objects if meta(o).get("namespace")} | {plan.namespace}
    others = sorted(needed - live.namespaces - {plan.namespace})
    if others:
        raise LightrailError(f"namespace(s) {', '.join(others)} do not exist; this deployment writes into them",
                             fix="install what owns them first (for kserve: KServe itself, see `invoke prereqs --stack=kserve`)")
    if plan.namespace in live.namespaces:
        out.unchanged.append(f"Namespace {plan.namespace}")
        _existing_pod_security(plan, live.namespace_labels, out)
        return
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": plan.namespace, "annotations": {CREATED_BY: "lightrail"}, "labels": plan.namespace_labels}}
    out.changed.append(f"Namespace {plan.namespace}: new")
    out.steps.append(st.apply(target, [ns], f"create namespace {plan.namespace}", changes=[st.Change(ref(ns))]))


def pod_security_refusal(plan: Plan, labels: dict[str, str] | None) -> LightrailError | None:
    """Why an existing namespace cannot take the plan's pods: it enforces a stricter Pod Security level
    (an existing namespace keeps its labels: loosening them is the owner's call)."""
    if labels is None:
        return None
    enforced = _enforced(labels)
    if podsecurity.LEVELS.index(enforced) >= podsecurity.LEVELS.index(plan.pod_security):
        return None
    return LightrailError(f"namespace {plan.namespace} enforces Pod Security {enforced!r}; this deployment's pods "
                          f"need {plan.pod_security!r}", fix=f"`{_label(plan)}`, or deploy into another namespace")


def _enforced(labels: dict[str, str]) -> str:
    enforced = labels.get(f"{podsecurity.LABEL}/enforce", "privileged")
    return enforced if enforced in podsecurity.LEVELS else "restricted"  # admission reads an invalid level so


def _label(plan: Plan) -> str:
    return f"kubectl label namespace {plan.namespace} {podsecurity.LABEL}/enforce={plan.pod_security} --overwrite"


def _existing_pod_security(plan: Plan, labels: dict[str, str] | None, out: DeployPlan) -> None:
    """An existing namespace keeps its Pod Security labels: refuse when it enforces a level the pods
    cannot meet, say so when it enforces another."""
    if labels is None:
        return
    if (refusal := pod_security_refusal(plan, labels)) is not None:
        raise refusal
    if (enforced := _enforced(labels)) != plan.pod_security:
        out.notes.append(f"namespace {plan.namespace} enforces Pod Security {enforced!r} (kept); the pods meet "
                         f"{plan.pod_security!r}: `{_label(plan)}` to enforce it")


def _secret_step(plan: Plan, live: Live, target: Target, token: Token | None, out: DeployPlan) -> None:
    if token is None:
        return
    if not plan.hf_secret:
        out.notes.append("an HF token was given, but no model here is downloaded from Hugging Face: not stored")
        return
    obj = secret_object(plan, token)
    what = ref(obj)
    if live.secret is not None and token.matches(annotations(live.secret).get(DIGEST_ANNOTATION)):
        out.unchanged.append(f"{what} (same token)")
        return
    out.changed.append(f"{what}: {'new' if live.secret is None else 'different token'}")
    out.steps.append(st.Step(f"store the HF token in {what}", action="secret", objects=(obj,), timeout=60,
                             changes=(st.Change(what, previous=live.secret),)))


def _difference(obj: dict, current: dict | None) -> str | None:
    if current is None:
        return "new"
    wanted = obj
    if annotations(current).get(HELM_RELEASE):   # helm rewrites this label to "Helm" on what it applies
        m = meta(obj)
        wanted = {**obj, "metadata": {**m, "labels": {k: v for k, v in (m.get("labels") or {}).items()
                                                       if k != MANAGED_BY_LABEL}}}
    where = difference(current, wanted)
    return f"{where} differs" if where else None


def _release_steps(desired: Desired, live: Live, target: Target, out: DeployPlan) -> None:
    """llmd: `helmfile sync` of exactly the releases with a new, different or missing object."""
    changed = []
    for release, objects in desired.releases.items():
        info = live.releases.get(release)
        why = [f"{ref(o)}: {d}" for o in objects if (d := _difference(o, live.objects.get(key(o))))]
        rendered = {key(o) for o in objects}
        why += [f"{ref(o)}: no longer rendered" for o in live.in_releases.get(release, []) if key(o) not in rendered]
        if info is None:
            why = [f"helm release {release}: new"] + why
        elif info.get("status") != "deployed":
            why = [f"helm release {release}: status {info.get('status')}"] + why
        if why:
            changed.append(release)
            out.changed.extend(why[:1] + [f"  {w}" for w in why[1:]])
        else:
            out.unchanged.append(f"helm release {release} ({len(objects)} objects)")
    if not changed:
        return
    selectors = [a for r in changed for a in ("--selector", f"name={r}")]
    args = target.helm(*desired.helmfile, *selectors, "sync", "--skip-deps")
    changes = [st.Change(f"helm release {r}", release=r,
                         revision=int(live.releases[r]["revision"]) if r in live.releases else None) for r in changed]
    objects = tuple(o for r in changed for o in desired.releases[r])
    out.steps.append(st.Step(f"helmfile sync {len(changed)} release(s): {', '.join(changed)}", tool="helmfile",
                             args=args, objects=objects, files=desired.files, timeout=1200, changes=tuple(changes)))


def _object_steps(desired: Desired, live: Live, target: Target, out: DeployPlan) -> None:
    """kserve: server-side apply of the new or different objects, built-in kinds before custom resources."""
    phases: dict[str, list[tuple[dict, dict | None]]] = {"crds": [], "builtin": [], "custom": []}
    for obj in desired.objects:
        current = live.objects.get(key(obj))
        why = _difference(obj, current)
        if not why:
            out.unchanged.append(ref(obj))
            continue
        out.changed.append(f"{ref(obj)}: {why}")
        phase = "crds" if obj["kind"] == "CustomResourceDefinition" else "custom" if is_custom(obj) else "builtin"
        phases[phase].append((obj, current))
    titles = {"crds": "apply CRDs", "builtin": "apply built-in objects", "custom": "apply custom resources"}
    for phase, items in phases.items():
        if not items:
            continue
        changes = [st.Change(ref(o), previous=sendable(c) if c else None) for o, c in items]
        objects = [o for o, _ in items]
        out.steps.append(st.apply(target, objects, f"{titles[phase]} ({len(objects)})", changes=changes))
        if phase == "crds":
            names = [f"crd/{meta(o)['name']}" for o in objects]
            out.steps.append(st.Step("wait for the CRDs to be established", tool="kubectl", timeout=90,
                                     args=target.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)))


# ---------------------------------------------------------------------------------------------
# Rollback


def plan_rollback(started: list[st.Step], target: Target, timeout: float = 300) -> tuple[list[st.Step], list[str]]:
    """Steps that undo the changes of `started` (newest first), and what cannot be undone."""
    out: list[st.Step] = []
    notes: list[str] = []
    for step in reversed(started):
        created, restore = [], []
        for change in reversed(step.changes):
            if change.release:
                out.append(_release_rollback(change, target, timeout))
            elif change.previous is None:
                created.append(change)
            elif change.previous.get("kind") == "Secret":
                notes.append(f"{change.what} keeps the new token: the old one was never read, so it cannot be restored")
            else:
                restore.append(change.previous)
        if created:
            stubs = [_stub_for(step, c.what) for c in created]
            out.append(st.delete(target, stubs, f"delete what this deploy created ({len(stubs)})", timeout=timeout))
        if restore:
            out.append(st.apply(target, restore, f"restore {len(restore)} object(s) as they were", force=True))
    return out, notes


def _release_rollback(change: st.Change, target: Target, timeout: float) -> st.Step:
    ns = ("--namespace", target.namespace, "--wait", f"--timeout={int(timeout)}s")
    if change.revision is None:
        return st.Step(f"uninstall new helm release {change.release}", tool="helm",
                       args=target.helm("uninstall", change.release, *ns), timeout=timeout + 30)
    return st.Step(f"roll back helm release {change.release} to revision {change.revision}", tool="helm",
                   args=target.helm("rollback", change.release, str(change.revision), *ns), timeout=timeout + 30)


def _stub_for(step: st.Step, what: str) -> dict:
    obj = next(o for o in step.objects if ref(o) == what)
    return stub(obj)
