"""Deploy planning: real renders (kserve) and recorded live objects (llmd) -> steps, conflicts, rollback."""
from __future__ import annotations

import copy
import hashlib
import re
import shlex

import pytest

from lightrail.errors import LightrailError
from lightrail.ops import steps as st
from lightrail.ops.deploy import Desired, Live, plan_deploy, plan_rollback
from lightrail.ops.objects import difference, key, meta, ref, sendable
from lightrail.ops.secrets import Token
from lightrail.ops.target import Target
from lightrail.plan import Request, build_plan
from lightrail.render import load_manifests, render_validated
from tests.test_ops_readiness import obj

TARGET = Target("prod-east", "lightrail", "--kube-context")
TOKEN = Token("hf_" + "PLANTEDtoken0000000000000000000")   # fake, split so secret scanners stay quiet


def kserve(pattern="baseline", accel="sim", **kw):
    plan = build_plan(Request(pattern=pattern, accel=accel, stack="kserve", **kw))
    return plan, Desired(objects=render_validated(plan).objects)


def applied(desired: dict, generation: int = 1) -> dict:
    """`desired` as the API server returns it after a server-side apply: metadata, defaults, status."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid=f"uid-{meta(desired)['name']}", resourceVersion="1234", generation=generation,
                            creationTimestamp="2026-11-20T10:00:00Z",
                            managedFields=[{"manager": "lightrail", "operation": "Apply", "apiVersion": desired["apiVersion"]}])
    if desired["kind"] == "NetworkPolicy":
        for rule in live["spec"].get("egress", []) + live["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                port.setdefault("protocol", "TCP")   # a server default
    live["status"] = {"observedGeneration": generation}
    return live


def live_of(desired: Desired, namespaces=("lightrail", "kserve")) -> Live:
    return Live(namespaces=set(namespaces), objects={key(o): applied(o) for o in desired.objects})


def commands(plan_steps) -> list[str]:
    return [" ".join([s.tool, *s.args]) for s in plan_steps if s.action == "run"]


# ---------------------------------------------------------------------------------------------
# kserve: objects applied server-side, built-in kinds first


def test_kserve_on_an_empty_namespace():
    plan, desired = kserve("multimodel")
    dp = plan_deploy(plan, desired, Live(namespaces={"kserve"}), TARGET, timeout=300)
    assert [s.title for s in dp.steps] == ["create namespace lightrail", "apply built-in objects (16)",
                                           "apply custom resources (4)", "wait until ready (timeout 300 s)"]
    builtin, custom = dp.steps[1].objects, dp.steps[2].objects
    assert {o["kind"] for o in builtin} == {"ServiceAccount", "Role", "RoleBinding", "Service", "Deployment",
                                            "NetworkPolicy"}
    assert [o["kind"] for o in custom][-2:] == ["LLMInferenceService", "LLMInferenceService"]
    assert len(dp.changed) == 1 + len(desired.objects) and not dp.unchanged
    for cmd in commands(dp.steps):
        assert cmd.startswith("kubectl --context=prod-east apply --server-side --field-manager=lightrail")
    assert dp.steps[-1].objects == tuple(desired.objects)


def test_crds_are_applied_first_and_waited_for_before_what_uses_them():
    """A CRD the deployment carries goes in its own step, then `kubectl wait` for Established:
    custom resources applied before that are refused by the API server."""
    from tests.test_ops_readiness import load

    plan, desired = kserve("baseline")
    crd = sendable(next(c for c in load("ops/crds.yaml") if c["spec"]["names"]["kind"] == "InferencePool"))
    dp = plan_deploy(plan, Desired(objects=[crd, *desired.objects]), Live(namespaces={"kserve"}), TARGET, timeout=300)
    assert [(s.title, s.timeout) for s in dp.steps] == [
        ("create namespace lightrail", 300), ("apply CRDs (1)", 300), ("wait for the CRDs to be established", 90),
        ("apply built-in objects (5)", 300), ("apply custom resources (1)", 300), ("wait until ready (timeout 300 s)", 300)]
    assert dp.steps[1].objects == (crd,)
    wait = dp.steps[2]
    assert wait.tool == "kubectl" and wait.args == ("--context=prod-east", "wait", "--for=condition=Established",
                                                    "--timeout=60s", "crd/inferencepools.inference.networking.k8s.io")
    assert dp.changed[:2] == ["Namespace lightrail: new",
                              "CustomResourceDefinition inferencepools.inference.networking.k8s.io: new"]


def test_deploying_twice_changes_nothing_and_says_so():
    plan, desired = kserve("multimodel")
    dp = plan_deploy(plan, desired, live_of(desired), TARGET)
    assert [s.action for s in dp.steps] == ["wait"]
    assert not dp.changes_anything and dp.changed == []
    assert sorted(dp.unchanged) == sorted(["Namespace lightrail", *(ref(o) for o in desired.objects)])


def test_one_changed_field_applies_that_object_only_and_remembers_it():
    plan, desired = kserve("caching", replicas=2)
    live = live_of(desired)
    service = next(o for o in desired.objects if o["kind"] == "LLMInferenceService")
    before = live.objects[key(service)]
    before["spec"]["replicas"] = 3
    dp = plan_deploy(plan, desired, live, TARGET, wait=False)
    assert dp.changed == [f"LLMInferenceService lightrail/{meta(service)['name']}: spec.replicas differs"]
    (step,) = dp.steps
    assert step.objects == (service,)
    (change,) = step.changes
    assert change.previous == sendable(before) and "status" not in change.previous
    assert "uid" not in change.previous["metadata"] and "managedFields" not in change.previous["metadata"]


def test_an_object_read_with_null_fields_is_restored_without_them():
    """A read LLMInferenceService held `router: {route: null, gateway: null}`; applied back as it was read,
    the API server refused it ("spec.router.route in body must be of type object"), so a failed deploy's
    rollback could not restore it. A null is no value: it is left out."""
    live = {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": "m", "namespace": "n", "uid": "u", "annotations": None},
            "spec": {"router": {"route": None, "gateway": None, "scheduler": {"config": {"inline": {}}}},
                     "template": {"containers": [{"name": "main", "args": None, "image": "i"}]}},
            "status": {"conditions": []}}
    assert sendable(live) == {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
                              "metadata": {"name": "m", "namespace": "n"},
                              "spec": {"router": {"scheduler": {"config": {"inline": {}}}},
                                       "template": {"containers": [{"name": "main", "image": "i"}]}}}


def test_difference_ignores_server_defaults_but_not_our_fields():
    desired = {"spec": {"resources": {"cpu": "1", "memory": "1Gi"}, "port": 8000, "flag": False, "list": [{"a": 1}]}}
    live = {"spec": {"resources": {"cpu": "1000m", "memory": "1024Mi"}, "port": "8000", "list": [{"a": 1, "b": 2}],
                     "extra": True}}
    assert difference(live, desired) is None
    live["spec"]["list"].append({"a": 3})
    assert difference(live, desired) == "spec.list"
    assert difference({"spec": {"resources": {"cpu": "2"}}}, {"spec": {"resources": {"cpu": "1"}}}) == "spec.resources.cpu"


@pytest.mark.parametrize("change, expected", [
    (lambda o: o["metadata"]["labels"].update({"lightrail.dev/pattern": "caching"}),
     "belongs to Lightrail deployment caching (kserve)"),
    (lambda o: o["metadata"].update(labels={}, managedFields=[{"manager": "kubectl-client-side-apply"}]),
     "belongs to kubectl-client-side-apply"),
    (lambda o: o["metadata"].update(annotations={"meta.helm.sh/release-name": "team-web"}),
     "belongs to helm release team-web"),
    (lambda o: o["metadata"].update(ownerReferences=[{"apiVersion": "serving.kserve.io/v1alpha2", "kind":
                                                      "LLMInferenceService", "name": "x", "uid": "u", "controller": True}]),
     "is controlled by LLMInferenceService x"),
])
def test_objects_of_others_are_refused(change, expected):
    plan, desired = kserve()
    live = Live(namespaces={"lightrail"})
    victim = next(o for o in desired.objects if o["kind"] == "NetworkPolicy")
    theirs = applied(victim)
    change(theirs)
    live.objects[key(victim)] = theirs
    with pytest.raises(LightrailError) as err:
        plan_deploy(plan, desired, live, TARGET)
    assert f"NetworkPolicy lightrail/{meta(victim)['name']} {expected}" in str(err.value)
    assert "invoke teardown" in str(err.value)


def test_refuses_reserved_namespaces_and_missing_foreign_namespaces():
    plan, desired = kserve("multimodel")
    sneaky = copy.deepcopy(desired)
    sneaky.objects[0]["metadata"]["namespace"] = "kube-system"
    with pytest.raises(LightrailError, match="refusing to write into kube-system"):
        plan_deploy(plan, sneaky, Live(namespaces={"lightrail", "kserve", "kube-system"}), TARGET)
    with pytest.raises(LightrailError, match=r"namespace\(s\) kserve do not exist"):
        plan_deploy(plan, desired, Live(namespaces={"lightrail"}), TARGET)


# ---------------------------------------------------------------------------------------------
# HF token Secret


def test_token_secret_is_created_then_left_alone():
    plan = build_plan(Request(pattern="baseline", accel="cpu", stack="kserve", hf_token=True))
    desired = Desired(objects=render_validated(plan).objects)
    dp = plan_deploy(plan, desired, Live(namespaces={"lightrail"}), TARGET, TOKEN, wait=False)
    secret_step = next(s for s in dp.steps if s.action == "secret")
    (secret,) = secret_step.objects
    digest = secret["metadata"]["annotations"]["lightrail.dev/token-digest"]
    assert TOKEN.matches(digest) and not Token("hf_another").matches(digest)
    assert digest.startswith("pbkdf2-sha256$200000$") and hashlib.sha256(TOKEN.reveal().encode()).hexdigest() not in digest
    assert TOKEN.digest() != TOKEN.digest(), "every digest has its own random salt"
    assert "data" not in secret and "stringData" not in secret and TOKEN.reveal() not in repr(dp)
    assert (secret_step.title, secret_step.timeout) == ("store the HF token in Secret lightrail/lightrail-hf-token", 60)
    assert secret_step.changes == (st.Change("Secret lightrail/lightrail-hf-token", previous=None),)
    assert "Secret lightrail/lightrail-hf-token: new" in dp.changed
    again = Live(namespaces={"lightrail"}, objects={key(o): applied(o) for o in desired.objects},
                 secret=applied(secret))
    dp2 = plan_deploy(plan, desired, again, TARGET, TOKEN, wait=False)
    assert dp2.steps == [] and "Secret lightrail/lightrail-hf-token (same token)" in dp2.unchanged
    dp3 = plan_deploy(plan, desired, again, TARGET, Token("hf_another"), wait=False)
    assert [s.action for s in dp3.steps] == ["secret"]
    assert dp3.changed == ["Secret lightrail/lightrail-hf-token: different token"]
    assert dp3.steps[0].changes == (st.Change("Secret lightrail/lightrail-hf-token", previous=applied(secret)),)


def test_token_for_a_simulator_is_not_stored():
    plan = build_plan(Request(pattern="baseline", accel="sim", stack="kserve", hf_token=True))
    dp = plan_deploy(plan, Desired(objects=render_validated(plan).objects), Live(namespaces={"lightrail"}), TARGET,
                     TOKEN, wait=False)
    assert not any(s.action == "secret" for s in dp.steps)
    assert "not stored" in dp.notes[0]


def test_a_secret_lightrail_did_not_create_is_refused():
    plan = build_plan(Request(pattern="baseline", accel="cpu", stack="kserve", hf_token=True))
    desired = Desired(objects=render_validated(plan).objects)
    theirs = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lightrail-hf-token", "namespace": "lightrail",
                                                                  "managedFields": [{"manager": "kubectl-create"}]}}
    with pytest.raises(LightrailError, match="was not created by Lightrail \\(kubectl-create\\)"):
        plan_deploy(plan, desired, Live(namespaces={"lightrail"}, secret=theirs), TARGET, TOKEN)


# ---------------------------------------------------------------------------------------------
# llmd: helm releases, synced only when something in them changed


def rendered(live: dict) -> dict:
    """What helmfile renders for a live object: no server fields, Lightrail's managed-by label."""
    out = sendable(live)
    out["metadata"]["annotations"] = {k: v for k, v in out["metadata"].get("annotations", {}).items()
                                      if not k.startswith("meta.helm.sh/")}
    if not out["metadata"]["annotations"]:
        del out["metadata"]["annotations"]
    out["metadata"]["labels"] = {**out["metadata"].get("labels", {}), "app.kubernetes.io/managed-by": "lightrail",
                                 "lightrail.dev/pattern": "baseline", "lightrail.dev/stack": "llmd"}
    return out


def helm_applied(desired: dict, release: str) -> dict:
    live = applied(desired)
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
    live["metadata"]["annotations"] = {**live["metadata"].get("annotations", {}),
                                       "meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": "lightrail"}
    return live


RELEASES = {"baseline-infra": [("Gateway", "caching-gateway")],
            "baseline-qwen2-5-3b-instruct": [("HTTPRoute", "baseline-qwen2-5-3b-instruct"),
                                             ("InferencePool", "baseline-qwen2-5-3b-instruct")],
            "baseline-qwen2-5-3b-instruct-ms": [("Deployment", "baseline-qwen2-5-3b-instruct-decode")]}


def llmd_state():
    plan = build_plan(Request(pattern="baseline", accel="gpu"))
    releases = {r: [rendered(obj(k, n)) for k, n in items] for r, items in RELEASES.items()}
    desired = Desired(objects=[o for objs in releases.values() for o in objs], releases=releases,
                      helmfile=("--file", "helmfiles/helmfile.yaml.gotmpl", "--environment", "istio",
                                "--state-values-file", "/tmp/w/state.yaml"), files={"/tmp/w/state.yaml": "pattern: baseline\n"})
    live = Live(namespaces={"lightrail"},
                objects={key(o): helm_applied(o, r) for r, objs in releases.items() for o in objs},
                releases={r: {"name": r, "revision": "2", "status": "deployed"} for r in releases})
    return plan, desired, live


def test_llmd_deployed_twice_syncs_nothing_although_helm_rewrote_managed_by():
    plan, desired, live = llmd_state()
    dp = plan_deploy(plan, desired, live, TARGET, wait=False)
    assert dp.steps == [] and dp.changed == []
    assert dp.unchanged[1:] == ["helm release baseline-infra (1 objects)",
                                "helm release baseline-qwen2-5-3b-instruct (2 objects)",
                                "helm release baseline-qwen2-5-3b-instruct-ms (1 objects)"]


def test_llmd_syncs_exactly_the_changed_releases():
    plan, desired, live = llmd_state()
    deployment = desired.releases["baseline-qwen2-5-3b-instruct-ms"][0]
    live.objects[key(deployment)]["spec"]["replicas"] = 2
    del live.releases["baseline-infra"]
    dp = plan_deploy(plan, desired, live, TARGET, wait=False)
    (step,) = dp.steps
    assert step.tool == "helmfile" and step.files == {"/tmp/w/state.yaml": "pattern: baseline\n"}
    assert " ".join(step.args) == (
        "--kube-context=prod-east --file helmfiles/helmfile.yaml.gotmpl --environment istio --state-values-file "
        "/tmp/w/state.yaml --selector name=baseline-infra --selector name=baseline-qwen2-5-3b-instruct-ms sync --skip-deps")
    assert [(c.release, c.revision) for c in step.changes] == [("baseline-infra", None),
                                                               ("baseline-qwen2-5-3b-instruct-ms", 2)]
    assert step.objects == tuple(desired.releases["baseline-infra"] + desired.releases["baseline-qwen2-5-3b-instruct-ms"])
    assert dp.changed == ["helm release baseline-infra: new",
                          "Deployment lightrail/baseline-qwen2-5-3b-instruct-decode: spec.replicas differs"]


def test_llmd_failed_release_is_synced_again():
    plan, desired, live = llmd_state()
    live.releases["baseline-qwen2-5-3b-instruct"]["status"] = "failed"
    (step,) = plan_deploy(plan, desired, live, TARGET, wait=False).steps
    assert "name=baseline-qwen2-5-3b-instruct" in step.args


def test_llmd_refuses_objects_outside_its_releases():
    plan, desired, live = llmd_state()
    route = desired.releases["baseline-qwen2-5-3b-instruct"][0]
    live.objects[key(route)]["metadata"]["annotations"]["meta.helm.sh/release-name"] = "someone-elses"
    with pytest.raises(LightrailError, match="not in any of this deployment's helm releases \\(helm release someone-elses\\)"):
        plan_deploy(plan, desired, live, TARGET)


# ---------------------------------------------------------------------------------------------
# Rollback


def test_rollback_undoes_started_steps_newest_first():
    plan, desired = kserve("multimodel")
    live = live_of(desired, namespaces=("kserve",))
    changed = next(o for o in desired.objects if o["kind"] == "LLMInferenceService")
    live.objects[key(changed)]["spec"]["replicas"] = 5
    new = [o for o in desired.objects if o["kind"] == "NetworkPolicy"][:2]
    for o in new:
        del live.objects[key(o)]
    dp = plan_deploy(plan, desired, live, TARGET, TOKEN)
    started = [s for s in dp.steps if s.action != "wait"]
    steps, notes = plan_rollback(started, TARGET)
    assert [s.title for s in steps] == ["restore 1 object(s) as they were", "delete what this deploy created (2)",
                                        "delete what this deploy created (1)"]
    restore, delete, namespace = steps
    assert "--force-conflicts" in restore.args and restore.objects[0]["spec"]["replicas"] == 5
    assert [meta(o)["name"] for o in delete.objects] == [meta(o)["name"] for o in reversed(new)]
    assert set(delete.objects[0]) == {"apiVersion", "kind", "metadata"}
    assert namespace.objects == ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lightrail"}},)
    assert " ".join(delete.args).startswith("--context=prod-east delete --ignore-not-found --wait=true")
    assert notes == []
    # a shorter rollback timeout reaches the delete steps (kubectl's --timeout and the step's own)
    (_, quick, _), _ = plan_rollback(started, TARGET, timeout=45)
    assert "--timeout=45s" in quick.args and quick.timeout == 75


def test_rollback_of_helm_releases_and_a_replaced_secret():
    plan, desired, live = llmd_state()
    del live.releases["baseline-infra"]
    live.objects[key(desired.releases["baseline-qwen2-5-3b-instruct-ms"][0])]["spec"]["replicas"] = 4
    secret_step = st.Step("store", action="secret", objects=({"apiVersion": "v1", "kind": "Secret",
                                                              "metadata": {"name": "s", "namespace": "lightrail"}},),
                          changes=(st.Change("Secret lightrail/s", previous={"kind": "Secret"}),))
    dp = plan_deploy(plan, desired, live, TARGET, wait=False)
    steps, notes = plan_rollback([secret_step, *dp.steps], TARGET, timeout=120)
    assert [" ".join(s.args) for s in steps] == [
        "--kube-context=prod-east rollback baseline-qwen2-5-3b-instruct-ms 2 --namespace lightrail --wait --timeout=120s",
        "--kube-context=prod-east uninstall baseline-infra --namespace lightrail --wait --timeout=120s"]
    assert notes == ["Secret lightrail/s keeps the new token: the old one was never read, so it cannot be restored"]
    assert [(s.title, s.tool, s.timeout) for s in steps] == [
        ("roll back helm release baseline-qwen2-5-3b-instruct-ms to revision 2", "helm", 150),
        ("uninstall new helm release baseline-infra", "helm", 150)]


def test_every_command_names_the_chosen_context():
    plan, desired = kserve("multimodel")
    dp = plan_deploy(plan, desired, Live(namespaces={"kserve"}), TARGET)
    rollback, _ = plan_rollback(dp.steps, TARGET)
    _, llmd, live = llmd_state()
    del live.releases["baseline-infra"]
    llmd_steps = plan_deploy(build_plan(Request(pattern="baseline", accel="gpu")), llmd, live, TARGET).steps
    runs = [s for s in dp.steps + rollback + llmd_steps if s.action == "run"]
    assert len(runs) >= 5
    assert all(s.args[0] in ("--context=prod-east", "--kube-context=prod-east") for s in runs)


def dry_run_sections(lines: list[str]) -> dict[str, dict]:
    """A dry run's printout read back: per step title, its command line(s) and the YAML it shows."""
    sections, current = {}, None
    for line in "\n".join(lines).splitlines():
        header = re.match(r"^\[\d+\] (.*)$", line)
        if header:
            current = sections[header.group(1)] = {"commands": [], "yaml": [], "notes": []}
        elif current is not None and line.startswith("    $ "):
            current["commands"].append(shlex.split(line[6:]))
        elif current is not None and line.startswith("    --- "):
            current["notes"].append(line.strip())
        elif current is not None and line.startswith("    "):
            (current["yaml"] if current["notes"] else current["notes"]).append(line[4:])
    for section in sections.values():
        section["objects"] = load_manifests("\n".join(section.pop("yaml")))
    return sections


def test_dry_run_text_shows_commands_objects_and_files_with_the_secret_redacted():
    """What `deploy --dry-run` prints, read back and compared with the render (not with `show` again):
    each kubectl command in full, on its stdin exactly the rendered objects, the token never."""
    from lightrail.ops import flows

    plan = build_plan(Request(pattern="baseline", accel="cpu", stack="kserve", hf_token=True))
    rendered = render_validated(plan).objects
    lines: list[str] = []
    flows.deploy(plan, TARGET, None, dry_run=True, out=lines.append, token=TOKEN)
    assert TOKEN.reveal() not in "\n".join(lines)
    sections = dry_run_sections(lines)
    assert list(sections) == ["create namespace lightrail", "store the HF token in Secret lightrail/lightrail-hf-token",
                              "apply built-in objects (6)", "apply custom resources (1)",
                              "wait until ready (timeout 900 s)"]
    apply = ["kubectl", "--context=prod-east", "apply", "--server-side", "--field-manager=lightrail",
             "--request-timeout=60s", "-f", "-"]
    for title in ("create namespace lightrail", "apply built-in objects (6)", "apply custom resources (1)"):
        assert sections[title]["commands"] == [apply] and sections[title]["notes"][0] == "--- stdin ---"
    assert sections["apply built-in objects (6)"]["objects"] == [o for o in rendered if o["kind"] == "NetworkPolicy"]
    assert sections["apply custom resources (1)"]["objects"] == [o for o in rendered if o["kind"] == "LLMInferenceService"]
    (namespace,) = sections["create namespace lightrail"]["objects"]
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "lightrail")
    secret = sections["store the HF token in Secret lightrail/lightrail-hf-token"]
    assert secret["commands"] == [] and secret["notes"][0].startswith("API: server-side apply Secret lightrail/")
    assert "(the HF token given, never shown)" in secret["notes"][0]
    (shown,) = secret["objects"]
    assert shown["stringData"] == {"HF_TOKEN": "<redacted>"} and "data" not in shown
    _, llmd, live = llmd_state()
    (sync,) = plan_deploy(build_plan(Request(pattern="baseline", accel="gpu")), llmd,
                          Live(namespaces={"lightrail"}), TARGET, wait=False).steps
    shown = st.show(sync, 1)
    assert "--- file /tmp/w/state.yaml ---\n    pattern: baseline" in shown and "--- objects ---" in shown


# ---------------------------------------------------------------------------------------------
# What the executor reports and lets through (Ctrl-C mid-step; errors that echo the token)


def test_ctrl_c_reports_half_applied_state_and_how_to_undo_it():
    """Interrupted while the custom resources were being applied: the journal says what was applied,
    what may be half-applied, and the commands that undo both (a real Ctrl-C during the wait runs in
    tests/e2e/test_deploy.py)."""
    from lightrail.ops.executor import Journal
    from lightrail.ops.flows import report_interrupted

    plan, desired = kserve()
    dp = plan_deploy(plan, desired, Live(namespaces={"kserve"}), TARGET)
    assert [s.title for s in dp.steps[:3]] == ["create namespace lightrail", "apply built-in objects (5)",
                                               "apply custom resources (1)"]
    lines: list[str] = []
    report_interrupted(Journal(started=list(dp.steps[:3]), finished=2), TARGET, lines.append, plan)
    assert lines[:4] == ["interrupted on context prod-east (--kube-context), namespace lightrail; "
                         "the cluster is left as it is:", "  applied: create namespace lightrail",
                         "  applied: apply built-in objects (5)",
                         "  HALF-APPLIED (interrupted while running): apply custom resources (1)"]
    assert lines[4] == ("to undo, run these (or `invoke teardown --pattern=baseline --stack=kserve "
                        "--namespace=lightrail`):")
    assert len(lines) == 8 and all(l.startswith("    $ kubectl --context=prod-east delete") for l in lines[5:])
    quiet: list[str] = []
    report_interrupted(Journal(started=[], finished=0), TARGET, quiet.append, plan)
    assert quiet == ["interrupted: nothing had been changed"]


class Echoing:
    """Stands in for the cluster where no real server can be made to answer like this: an API error
    and a tool error that echo the request, token included."""

    def apply_secret(self, obj, token):
        raise LightrailError(f"could not store Secret: 422 Unprocessable: stringData.HF_TOKEN={token.reveal()}")

    def run(self, tool, args, stdin=None, timeout=300):
        raise LightrailError(f"kubectl apply failed: saw {TOKEN.reveal()}")


def test_errors_that_echo_the_token_are_scrubbed_before_they_travel_on():
    from lightrail.ops.executor import Live as LiveExecutor

    plan, desired = kserve(accel="cpu", hf_token=True)
    dp = plan_deploy(plan, desired, Live(namespaces={"kserve"}), TARGET, TOKEN)
    secret = next(s for s in dp.steps if s.action == "secret")
    apply = next(s for s in dp.steps if s.action == "run")
    lines: list[str] = []
    executor = LiveExecutor(Echoing(), lines.append, TOKEN)
    errors = []
    for step in (secret, apply):
        with pytest.raises(LightrailError) as err:
            executor.run(step)
        errors.append(err.value)
    assert str(errors[0]).endswith("stringData.HF_TOKEN=<redacted>") and str(errors[1]).endswith("saw <redacted>")
    for text in [*map(str, errors), *map(repr, errors), *lines, repr(TOKEN), f"{TOKEN}"]:
        assert TOKEN.reveal() not in text
    assert all(e.__cause__ is None and e.__suppress_context__ for e in errors)


# Pod Security: the namespace Lightrail creates enforces the plan's level; one it finds keeps its own


def test_a_new_namespace_enforces_the_plans_pod_security_level():
    plan, desired = kserve("moe", "gpu")
    dp = plan_deploy(plan, desired, Live(namespaces={"kserve"}), TARGET)
    (namespace,) = dp.steps[0].objects
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] == "v1.34"


def test_an_existing_namespace_stricter_than_the_pods_is_refused_and_a_laxer_one_is_named():
    plan, desired = kserve("moe", "gpu")
    strict = {"pod-security.kubernetes.io/enforce": "baseline"}
    with pytest.raises(LightrailError, match="namespace lightrail enforces Pod Security 'baseline'; this deployment's "
                                             "pods need 'privileged'.*kubectl label namespace lightrail"):
        plan_deploy(plan, desired, Live(namespaces={"lightrail", "kserve"}, namespace_labels=strict), TARGET)
    plan, desired = kserve("baseline")
    dp = plan_deploy(plan, desired, Live(namespaces={"lightrail", "kserve"}, namespace_labels={}), TARGET)
    assert not any(s.title.startswith("create namespace") for s in dp.steps)
    assert dp.notes == ["namespace lightrail enforces Pod Security 'privileged' (kept); the pods meet 'restricted': "
                        "`kubectl label namespace lightrail pod-security.kubernetes.io/enforce=restricted --overwrite` "
                        "to enforce it"]
