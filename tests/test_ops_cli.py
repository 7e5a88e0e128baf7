"""The ops tasks as users run them (`invoke ...` in a subprocess), against kubeconfigs with no cluster behind."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap

import pytest
import yaml

from lightrail.settings import ROOT, TOOLS_BIN, charts_dir

PLANTED = "hf_" + "PLANTEDcliTOKEN9876543210abcdef"   # fake, split so secret scanners stay quiet


@pytest.fixture
def kubeconfig(tmp_path):
    """Two contexts, neither reachable (port 9 refuses): `current` is the kubeconfig's choice."""
    path = tmp_path / "kubeconfig"
    path.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Config
        clusters:
          - {name: one, cluster: {server: "https://127.0.0.1:9"}}
          - {name: two, cluster: {server: "https://127.0.0.1:9"}}
        users: [{name: u, user: {token: not-a-real-token}}]
        contexts:
          - {name: current, context: {cluster: one, user: u}}
          - {name: chosen, context: {cluster: two, user: u}}
        current-context: current
    """))
    return path


def invoke(*args, kubeconfig=None, env=None):
    full = {**os.environ, "HF_TOKEN": PLANTED, **(env or {})}
    if kubeconfig:
        full["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env=full, timeout=300)
    assert PLANTED not in proc.stdout + proc.stderr, "the HF token leaked into the output"
    return proc


def test_dry_run_uses_the_chosen_context_everywhere_and_redacts_the_token(kubeconfig):
    proc = invoke("deploy", "--pattern=baseline", "--accel=cpu", "--stack=kserve", "--kube-context=chosen",
                  "--dry-run", kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "not reachable" in out and "a dry run plans against an empty cluster" in out
    assert "to context chosen (--kube-context), namespace lightrail — dry run, nothing is changed" in out
    commands = [line for line in out.splitlines() if line.startswith("    $ ")]
    assert len(commands) == 3 and all("--context=chosen" in c for c in commands)
    assert "current" not in "\n".join(commands)
    assert "HF_TOKEN: <redacted>" in out and "lightrail.dev/token-digest: pbkdf2-sha256$" in out
    assert [line.split("] ")[1] for line in out.splitlines() if line.startswith("[")] == [
        "create namespace lightrail", "store the HF token in Secret lightrail/lightrail-hf-token",
        "apply built-in objects (6)", "apply custom resources (1)", "wait until ready (timeout 900 s)"]


def test_without_kube_context_the_current_one_is_named(kubeconfig):
    proc = invoke("deploy", "--pattern=baseline", "--accel=sim", "--stack=kserve", "--dry-run", kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    assert "to context current (current context)" in proc.stdout and "--context=current" in proc.stdout


def test_token_from_a_file_is_never_shown(kubeconfig, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(PLANTED + "\n")
    proc = invoke("deploy", "--pattern=baseline", "--accel=cpu", "--stack=kserve", "--dry-run",
                  f"--hf-token-file={token_file}", kubeconfig=kubeconfig, env={"HF_TOKEN": ""})
    assert proc.returncode == 0 and "HF_TOKEN: <redacted>" in proc.stdout
    missing = invoke("deploy", "--pattern=baseline", "--accel=cpu", "--dry-run", f"--hf-token-file={tmp_path}/nope",
                     kubeconfig=kubeconfig)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: cannot read --hf-token-file {tmp_path}/nope: No such file or directory"


@pytest.mark.parametrize("args, message", [
    (["deploy", "--pattern=baseline", "--accel=sim", "--kube-context=elsewhere"],
     "error: kube context 'elsewhere' is not in your kubeconfig; valid: current, chosen"),
    (["deploy", "--pattern=baseline", "--accel=sim", "--namespace=kube-system"],
     "error: refusing to deploy into 'kube-system'"),
    (["teardown", "--all", "--namespace=kube-public"], "error: refusing to act on namespace 'kube-public'"),
    (["prereqs", "--dry-run", "--kube-context=elsewhere"], "error: kube context 'elsewhere' is not in your kubeconfig"),
])
def test_bad_targets_are_refused_before_anything_happens(kubeconfig, args, message):
    proc = invoke(*args, kubeconfig=kubeconfig)
    assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr


def test_a_real_deploy_needs_a_reachable_cluster(kubeconfig):
    proc = invoke("deploy", "--pattern=baseline", "--accel=cpu", "--stack=kserve", kubeconfig=kubeconfig)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cluster of context 'current' is not reachable")
    assert "Namespace" not in proc.stdout


def test_doctor_reports_the_unreachable_cluster_and_fails(kubeconfig):
    proc = invoke("doctor", "--kube-context=chosen", kubeconfig=kubeconfig)
    assert proc.returncode == 1
    assert "doctor on context chosen (--kube-context), namespace lightrail (reads only)" in proc.stdout
    assert "ok    tool helm      3.19.0" in proc.stdout and "fail  cluster" in proc.stdout
    assert proc.stderr.strip() == "error: 1 check(s) failed"


def test_prereqs_dry_run_lists_pinned_installs(kubeconfig):
    proc = invoke("prereqs", "--istio", "--dry-run", kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert steps == ["[1] install Gateway API CRDs v1.6.1", "[2] install InferencePool CRDs v1.6.0",
                     "[3] install LeaderWorkerSet v0.10.0", "[4] wait for the LeaderWorkerSet controller",
                     "[5] install InferenceModelRewrite CRD (llm-d-router v0.10.0)",
                     "[6] install Istio 1.29.9 CRDs (chart base)",
                     "[7] install istiod 1.29.9 with the Gateway API inference extension"]
    kserve = invoke("prereqs", "--stack=kserve", "--dry-run", kubeconfig=kubeconfig)
    assert kserve.returncode == 0 and "missing: KServe v0.20.0 with the LLMInferenceService controller" in kserve.stdout
    assert "note: a real run ends with exit code 1 unless these 2 prerequisite(s) exist" in kserve.stdout


def test_teardown_needs_a_choice_and_status_needs_a_cluster(kubeconfig):
    neither = invoke("teardown", kubeconfig=kubeconfig)
    assert neither.returncode == 1 and neither.stderr.strip() == "error: give exactly one of --pattern=NAME or --all"
    dry = invoke("teardown", "--all", "--dry-run", kubeconfig=kubeconfig)
    assert dry.returncode == 0 and "nothing found: no cluster to look at" in dry.stdout
    status = invoke("status", kubeconfig=kubeconfig)
    assert status.returncode == 1 and "is not reachable" in status.stderr


@pytest.mark.skipif(charts_dir() is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
def test_up_dry_run_shows_the_whole_quick_start(kubeconfig):
    proc = invoke("up", "--engine=kind", "--dry-run", "--kube-context=kind-demo", "--name=demo", kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("create kind cluster demo (kindest/node:v1.34.0)") < out.index("install Gateway API CRDs") \
        < out.index("helmfile sync 3 release(s): baseline-infra") < out.index("smoke: real requests")
    assert "$ kind create cluster --name demo --image kindest/node:v1.34.0" in out
    assert "--kube-context=kind-demo" in out and "--context=kind-demo" in out
    wrong = invoke("up", "--engine=kind", "--dry-run", "--kube-context=prod", kubeconfig=kubeconfig)
    assert wrong.returncode == 1 and "valid: kind-lightrail" in wrong.stderr


@pytest.mark.skipif(charts_dir() is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
def test_up_kwok_dry_run_builds_the_cluster_from_local_binaries_and_shaped_nodes(kubeconfig):
    proc = invoke("up", "--engine=kwok", "--dry-run", "--name=demo", "--nodes=cpu:1,tpu:v6e-2x4:1",
                  kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("create kwok cluster demo (Kubernetes v1.34.4, local binaries)") \
        < out.index("create 2 simulated node(s)") < out.index("install Gateway API CRDs v1.6.1 (CRDs from") \
        < out.index("helmfile sync 3 release(s): baseline-infra")
    assert "--kube-apiserver-binary=" in out and "https://" not in out.split("create 2 simulated")[0]
    assert "google.com/tpu: '8'" in out and "no smoke on kwok" in out
    for bad, valid in (("--nodes=tpu:v5e-2x2:1", "valid: v6e-1x1"), ("--nodes=gpu:h100", "gpu:TYPE:COUNT"),
                       ("--nodes=fpga:1", "valid: gpu, tpu, cpu"), ("--name=Bad_Name!", "lowercase letters"),
                       ("--nodes=cpu:0", "from 1 to 100")):
        wrong = invoke("up", "--engine=kwok", "--dry-run", bad, kubeconfig=kubeconfig)
        assert wrong.returncode == 1 and valid in wrong.stderr and "Traceback" not in wrong.stderr, (bad, wrong.stderr)
        assert "create kwok cluster" not in wrong.stdout
    engine = invoke("up", "--engine=docker", "--dry-run", kubeconfig=kubeconfig)
    assert engine.returncode == 1 and "valid: kind, kwok" in engine.stderr


@pytest.mark.skipif(charts_dir() is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
def test_a_dry_runs_helmfile_command_runs_as_printed_after_the_dry_run_ended(kubeconfig, tmp_path):
    """The printed `helmfile ... sync` reads inputs that outlive the dry run: run it, with the
    non-mutating verb `template` in place of `sync`, and it renders the objects the dry run listed."""
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    proc = invoke("deploy", "--pattern=baseline", "--accel=sim", "--dry-run", kubeconfig=kubeconfig, env=env)
    assert proc.returncode == 0, proc.stderr
    kept = next((cache / "lightrail" / "helmfile").iterdir())
    assert f"note: helmfile reads the inputs kept in {kept} (named by their content" in proc.stdout
    command = next(line[len("    $ "):] for line in proc.stdout.splitlines() if line.startswith("    $ helmfile "))
    assert command.endswith(" sync --skip-deps") and f"--state-values-file {kept}/state.yaml" in command
    assert "--kube-context=current" in command
    argv = shlex.split(command.removesuffix(" sync --skip-deps")) + ["template", "--skip-deps"]
    ran = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{TOOLS_BIN}:{os.environ['PATH']}"})
    assert ran.returncode == 0, ran.stderr
    rendered = sorted(f"{o['kind']} {o['metadata']['name']}" for o in yaml.safe_load_all(ran.stdout) if o)
    listed = proc.stdout.split("--- objects ---")[1].split("\n[")[0]
    unindented = "\n".join(line[4:] for line in listed.splitlines())
    sent = sorted(f"{o['kind']} {o['metadata']['name']}" for o in yaml.safe_load_all(unindented) if o)
    assert rendered == sent and len(rendered) == 16
    kept_text = "".join(p.read_text() for p in kept.rglob("*") if p.is_file())
    assert PLANTED not in kept_text


@pytest.mark.skipif(charts_dir() is None, reason="needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
def test_kept_helmfile_inputs_that_were_edited_are_replaced(tmp_path, monkeypatch):
    from lightrail.ops.desired import kept_state
    from lightrail.plan import Request, build_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plan = build_plan(Request(pattern="baseline", accel="sim", stack="llmd"))
    kept = kept_state(plan, charts_dir())
    values = sorted((kept / "values").glob("*.yaml"))
    original = values[0].read_text()
    values[0].write_text("replicas: 99\n")
    (kept / "state.yaml").unlink()
    assert kept_state(plan, charts_dir()) == kept
    assert values[0].read_text() == original and (kept / "state.yaml").is_file()
    other_plan = build_plan(Request(pattern="baseline", accel="sim", stack="llmd", namespace="other"))
    other = kept_state(other_plan, charts_dir())
    assert other != kept and "namespace: other" in (other / "state.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "lightrail" / "helmfile").iterdir()) == sorted([kept.name, other.name])
