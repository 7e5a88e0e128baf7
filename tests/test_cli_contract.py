"""The CLI contract, case by case: bad input gets exit 1 and one `error:` line naming the valid choices,
with no traceback, nothing written and not one request to the cluster (docs/conventions.md).

Each case runs the real invoke program (parser included) in this process, against a kube API
server that records every request; a handful also run as `python -m invoke` subprocesses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from invoke import Program

import tasks
from lightrail.settings import ROOT
from lightrail.testing.kubeapi import RecordingKubeAPI
from tests.conftest import HAS_VLLM

PATTERNS = "valid: baseline, multimodel, caching, moe"
ACCELS = "valid: gpu, tpu, cpu, sim"
STACKS = "valid: llmd, kserve"
PROVIDERS = "valid: gke, istio, agentgateway"
FORMATS = "valid: table, json, yaml"
NS_NAME = "is not a valid Kubernetes name: 1 to 63 lowercase letters"
SECONDS = "must be a positive number of seconds"
SIM = ("--pattern=baseline", "--accel=sim")
URL = "--url=http://127.0.0.1:9"

# The smallest valid arguments of each task (what a case adds one bad value to).
BASE = {
    "plan": SIM, "render": (*SIM, "--out=OUT/new"), "doctor": (), "prereqs": ("--dry-run",),
    "deploy": (*SIM, "--dry-run"), "status": (), "teardown": ("--all", "--dry-run"), "up": ("--engine=kind", "--dry-run"),
    "smoke": ("--pattern=baseline", URL), "bench": ("--pattern=baseline", "--scenario=smoke", URL, "--dry-run"),
    "bench.list": (), "patterns": (), "migrate": ("--pattern=caching", "--accel=sim", "--to=kserve", "--dry-run"),
}
NAMESPACED = ["plan", "render", "doctor", "prereqs", "deploy", "status", "teardown", "up", "smoke", "bench", "migrate"]
PLANNED = ["plan", "render", "deploy", "doctor"]    # tasks taking every plan flag


def cases():
    """(id, argv, expected substring of the error line, needs) — `needs` marks cases that need vLLM."""
    out = []

    def add(case_id, argv, expected, needs=""):
        out.append(pytest.param(list(argv), expected, id=case_id,
                                marks=[pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM: run scripts/setup")]
                                if needs == "vllm" else []))

    # Namespaces: checked before anything else, by every task that takes one.
    for task in NAMESPACED:
        for bad in ("Bad_NS", "a" * 64, "-dash-", "dot.ted"):
            add(f"{task}-ns-{bad[:8]}", [task, *BASE[task], f"--namespace={bad}"], NS_NAME)
        if task != "status":   # status only reads: kube-system is a valid place to look
            add(f"{task}-ns-kube-system", [task, *BASE[task], "-n", "kube-system"], "kube-system")
    add("teardown-kube-system-dry-run", ["teardown", "--pattern=baseline", "--dry-run", "-n", "kube-system"],
        "refusing to act on namespace 'kube-system'")
    add("up-ns-kube-public", ["up", "--engine=kind", "--dry-run", "--namespace=kube-public"], "kube-public")
    # Durations: a positive number of seconds.
    for task in ("deploy", "teardown", "up", "smoke", "bench"):
        for bad in ("abc", "-5", "0", "nan", "inf", ""):
            add(f"{task}-timeout-{bad or 'empty'}", [task, *BASE[task], f"--timeout={bad}"], SECONDS)
    # Output formats.
    for task in ("plan", "doctor", "status", "smoke", "bench.list"):
        add(f"{task}-output-xml", [task, *BASE[task], "-o", "xml"], FORMATS)
    add("patterns-output-xml", ["patterns", "--output=xml"], "valid: table, json, yaml, markdown")
    # Kube contexts: only the kubeconfig's.
    for task in ("doctor", "prereqs", "deploy", "status", "teardown"):
        add(f"{task}-context-nope", [task, *BASE[task], "-k", "nope"], "kube context 'nope' is not in your kubeconfig; valid: fake")
    add("up-context-other", ["up", "--engine=kind", "--dry-run", "--kube-context=prod"], "valid: kind-lightrail")
    add("up-kwok-context-other", ["up", "--engine=kwok", "--dry-run", "--kube-context=prod"], "valid: kwok-lightrail")
    add("up-engine-unknown", ["up", "--engine=docker", "--dry-run"], "valid: kind, kwok")
    add("up-kwok-nodes-kind", ["up", "--engine=kwok", "--dry-run", "--nodes=fpga:1"], "valid: gpu, tpu, cpu")
    add("up-kwok-nodes-type", ["up", "--engine=kwok", "--dry-run", "--nodes=gpu:b200:1"], "valid: t4, l4")
    add("up-kwok-nodes-count", ["up", "--engine=kwok", "--dry-run", "--nodes=cpu:x"], "valid: a whole number from 1")
    add("up-kwok-nodes-empty", ["up", "--engine=kwok", "--dry-run", "--nodes=,"], "--nodes is empty")
    add("up-kwok-name", ["up", "--engine=kwok", "--dry-run", "--name=Bad_Name!"], "invalid cluster name")
    add("down-engine-unknown", ["down", "--engine=podman"], "valid: kind, kwok")
    add("down-kwok-name", ["down", "--engine=kwok", "--name=-x"], "invalid cluster name")
    # Patterns, accelerators, stacks.
    for task in ("plan", "render", "deploy", "smoke", "bench", "teardown"):
        argv = [a for a in BASE[task] if not a.startswith(("--pattern", "--all"))]
        add(f"{task}-pattern-nope", [task, *argv, "--pattern=nope"], PATTERNS)
    for task in ("plan", "render", "deploy", "doctor", "smoke", "bench"):
        add(f"{task}-accel-foo", [task, *[a for a in BASE[task] if not a.startswith(("--accel", "--pattern"))],
                                  "--pattern=baseline", "--accel=foo"], ACCELS)
    for task in ("plan", "render", "deploy", "doctor", "prereqs", "teardown", "smoke", "bench"):
        add(f"{task}-stack-foo", [task, *BASE[task], "--stack=foo"], STACKS)
    # Flags of one stack given with the other: refused, naming the stack they apply to.
    for task in PLANNED:
        plan_args = BASE[task] or SIM
        add(f"{task}-provider-on-kserve", [task, *plan_args, "--stack=kserve", "--provider=gke"],
            "--provider applies to --stack=llmd only (got stack=kserve)")
        add(f"{task}-kserve-api-on-llmd", [task, *plan_args, "--kserve-api=v1alpha1"],
            "--kserve-api applies to --stack=kserve only (got stack=llmd)")
        add(f"{task}-provider-nginx", [task, *plan_args, "--provider=nginx"], PROVIDERS)
        add(f"{task}-gpu-type-on-sim", [task, *plan_args, "--gpu-type=l4"], "--gpu-type applies to --accel=gpu only")
        add(f"{task}-topology-on-sim", [task, *plan_args, "--topology=2x2"], "--topology applies to --accel=tpu only")
        add(f"{task}-pod-security-strict", [task, *plan_args, "--pod-security=strict"],
            "unknown pod security level 'strict'; valid: restricted, baseline, privileged")
        add(f"{task}-monitoring-grafana", [task, *plan_args, "--monitoring=grafana"],
            "unknown monitoring 'grafana'; valid: none, prometheus, gmp")
        add(f"{task}-tls-and-issuer", [task, *plan_args, "--tls-secret=a", "--cert-manager-issuer=b",
                                       "--hostname=llm.example.com"], "not both")
        add(f"{task}-hostname-alone", [task, *plan_args, "--hostname=llm.example.com"],
            "give --tls-secret=NAME or --cert-manager-issuer=NAME too")
    add("plan-tls-without-hostname-llmd", ["plan", *SIM, "--tls-secret=cert"], "--hostname is required here")
    add("plan-tls-bad-hostname", ["plan", *SIM, "--tls-secret=cert", "--hostname=https://x"], "is not a DNS name")
    add("plan-tls-kserve-multimodel", ["plan", "--pattern=multimodel", "--accel=sim", "--stack=kserve",
                                       "--tls-secret=cert"], "TLS ingress for multimodel on kserve is not built")
    add("deploy-tls-smoke", ["deploy", *SIM, "--dry-run", "--smoke", "--tls-secret=cert", "--hostname=x.io"],
        "--smoke over HTTPS is not built yet")
    add("plan-monitoring-gmp", ["plan", *SIM, "--monitoring=gmp"], "valid: none, prometheus")
    add("plan-pod-security-below-kserve-moe", ["plan", "--pattern=moe", "--accel=gpu", "--stack=kserve",
                                               "--pod-security=restricted"], "valid here: privileged")
    add("prereqs-provider-nginx", ["prereqs", "--dry-run", "--provider=nginx"], PROVIDERS)
    add("prereqs-provider-on-kserve", ["prereqs", "--dry-run", "--stack=kserve", "--provider=gke"],
        "--provider applies to --stack=llmd only")
    add("prereqs-istio-on-kserve", ["prereqs", "--dry-run", "--stack=kserve", "--istio"], "--istio applies to --stack=llmd")
    add("prereqs-istio-with-gke", ["prereqs", "--dry-run", "--provider=gke", "--istio"], "--istio installs the istio provider")
    add("plan-gpu-type-zz", ["plan", "--pattern=baseline", "--accel=gpu", "--gpu-type=zz"], "valid: t4, l4, a100")
    add("plan-topology-9x9", ["plan", "--pattern=baseline", "--accel=tpu", "--topology=9x9"], "valid: 1x1, 2x2")
    add("plan-topology-multi-host", ["plan", "--pattern=baseline", "--accel=tpu", "--topology=4x4"], "use one of 1x1")
    add("plan-kserve-api-v1", ["plan", *SIM, "--stack=kserve", "--kserve-api=v1"], "valid: v1alpha2, v1alpha1")
    add("plan-moe-on-cpu", ["plan", "--pattern=moe", "--accel=cpu"], "supported: gpu/llmd")
    add("plan-no-pattern", ["plan", "--accel=sim"], "--pattern and --accel are required")
    add("plan-no-accel", ["plan", "--pattern=baseline"], "--pattern and --accel are required")
    # Inference engines (docs/engines.md): unknown, refused with the upstream reason, or off their cells.
    for task in PLANNED:
        plan_args = BASE[task] or SIM
        add(f"{task}-engine-nope", [task, *plan_args, "--inference-engine=tgi"], "valid: vllm, sglang, trtllm, llamacpp")
        add(f"{task}-engine-ollama", [task, *plan_args, "--inference-engine=ollama"], "no Prometheus metrics the endpoint picker")
        add(f"{task}-engine-on-sim", [task, *plan_args, "--inference-engine=sglang"], "the simulator imitates vLLM")
    gpu = ("--pattern=baseline", "--accel=gpu")
    add("plan-engine-on-tpu", ["plan", "--pattern=baseline", "--accel=tpu", "--inference-engine=llamacpp"],
        "TPU serving is vLLM TPU (tpu-inference) only (valid accelerators for llamacpp: cpu, gpu)")
    add("plan-sglang-on-cpu", ["plan", "--pattern=baseline", "--accel=cpu", "--inference-engine=sglang"], "valid: gpu")
    add("plan-engine-moe", ["plan", "--pattern=moe", "--accel=gpu", "--inference-engine=sglang"],
        "valid patterns: baseline, multimodel, caching")
    add("plan-engine-vllm-arg", ["plan", *gpu, "--inference-engine=trtllm", "--vllm-arg=--max-model-len=10"],
        "--vllm-arg is for --inference-engine=vllm")
    add("plan-trtllm-on-kserve", ["plan", *gpu, "--stack=kserve", "--inference-engine=trtllm"],
        "LLMInferenceService is built around vLLM")
    add("plan-llamacpp-on-kserve", ["plan", *gpu, "--stack=kserve", "--inference-engine=llamacpp"], "for SGLang only")
    # Model aliases (docs/aliases.md).
    for task in PLANNED:
        plan_args = BASE[task] or SIM
        add(f"{task}-alias-no-equals", [task, *plan_args, "--alias=chat"], "is not NAME=MODEL; valid: e.g. --alias chat=")
        add(f"{task}-alias-unknown-target", [task, *plan_args, "--alias=chat=a/b"], "is not served by this plan; valid:")
    add("smoke-alias-no-equals", ["smoke", *BASE["smoke"], "--alias=chat"], "is not NAME=MODEL")
    add("plan-alias-multimodel", ["plan", "--pattern=multimodel", "--accel=sim", "--alias=chat=Qwen/Qwen2.5-3B-Instruct"],
        "valid: aliases with baseline, caching or moe")
    add("plan-alias-kserve-two", ["plan", *SIM, "--stack=kserve", "--alias=a=Qwen/Qwen2.5-3B-Instruct",
                                  "--alias=b=Qwen/Qwen2.5-3B-Instruct"], "KServe names a model once")
    add("plan-alias-bad-name", ["plan", *SIM, "--alias=a b=Qwen/Qwen2.5-3B-Instruct"], "is not a model name")
    # Model weights (docs/weights.md).
    for task in PLANNED:
        plan_args = BASE[task] or SIM
        add(f"{task}-weights-s3", [task, *plan_args, "--weights=s3://b/m"], "valid: hf, pvc, pvc:CLAIM[/PATH], oci:IMAGE")
        add(f"{task}-cache-size-bad", [task, *plan_args, "--cache-size=lots"], "valid: a whole number of Mi, Gi or Ti")
    add("plan-weights-on-sim", ["plan", *SIM, "--weights=pvc"], "the simulator loads no weights")
    add("plan-weights-pvc-kserve", ["plan", "--pattern=baseline", "--accel=gpu", "--stack=kserve", "--weights=pvc"],
        "valid: --weights=pvc:CLAIM[/PATH]")
    add("plan-cache-size-kserve", ["plan", "--pattern=baseline", "--accel=gpu", "--stack=kserve", "--cache-size=9Gi"],
        "--cache-size applies to --stack=llmd only")
    add("plan-weights-oci-multimodel", ["plan", "--pattern=multimodel", "--accel=gpu", "--weights=oci:r.io/m/q:1"],
        "valid: --weights=pvc:CLAIM (each model under its id), hf or pvc")
    # Models and replicas.
    for task in ("plan", "render", "deploy", "smoke", "bench"):
        add(f"{task}-model-empty", [task, *BASE[task], "--model="], "--model is empty; valid:")
        add(f"{task}-model-dotdot", [task, *BASE[task], "--model=../../etc/passwd"], "without '..'")
    add("plan-model-no-slash", ["plan", *SIM, "--model=justaname"], "is not a Hugging Face id (org/name)")
    add("plan-model-twice", ["plan", "--pattern=multimodel", "--accel=sim", "--model=a/b,a/b"], "must be distinct")
    add("plan-baseline-two-models", ["plan", *SIM, "--model=a/b", "--model=c/d"], "use --pattern=multimodel")
    add("plan-multimodel-one-model", ["plan", "--pattern=multimodel", "--accel=sim", "--model=a/b"], "at least 2 models")
    for bad in ("x", "0", "-1", "1.5"):
        add(f"plan-replicas-{bad}", ["plan", *SIM, f"--replicas={bad}"], "--replicas must be a whole number from 1 to 2147483647")
    add("deploy-replicas-zero", ["deploy", *BASE["deploy"], "--replicas=0"], "--replicas must be a whole number")
    # vLLM flags: shape, reserved, contradicting the pattern, then vLLM's own parser.
    for task in ("plan", "render", "deploy"):
        add(f"{task}-vllm-arg-notaflag", [task, *BASE[task], "--vllm-arg=notaflag"], "is not a vLLM flag; valid: --name")
        add(f"{task}-vllm-arg-port", [task, *BASE[task], "--vllm-arg=--port=9999"], "--port is set by Lightrail")
    for flag in ("--host=0.0.0.0", "--model=x/y", "--served-model-name=x", "--uds=/tmp/s"):
        add(f"plan-vllm-arg-{flag[2:6]}", ["plan", *SIM, f"--vllm-arg={flag}"], "is set by Lightrail")
    add("plan-vllm-arg-space", ["plan", *SIM, "--vllm-arg=--max-model-len 8192"], "is not a vLLM flag")
    add("plan-vllm-arg-help", ["plan", *SIM, "--vllm-arg=--help"], "is not a vLLM flag")
    add("plan-vllm-arg-dashdash", ["plan", *SIM, "--vllm-arg=--"], "is not a vLLM flag")
    add("plan-caching-no-prefix-caching", ["plan", "--pattern=caching", "--accel=cpu",
                                           "--vllm-arg=--no-enable-prefix-caching"],
        "--no-enable-prefix-caching contradicts pattern 'caching', which needs --enable-prefix-caching")
    add("plan-moe-dp-conflict", ["plan", "--pattern=moe", "--accel=gpu", "--vllm-arg=--data-parallel-size=3"],
        "conflicts with the multi-node layout; valid: --data-parallel-size=")
    add("plan-moe-no-expert-parallel", ["plan", "--pattern=moe", "--accel=gpu", "--vllm-arg=--no-enable-expert-parallel"],
        "contradicts pattern 'moe'")
    add("plan-tp-conflict", ["plan", "--pattern=baseline", "--accel=tpu", "--vllm-arg=--tensor-parallel-size=3"],
        "conflicts with the accelerator")
    add("plan-vllm-arg-unknown", ["plan", "--pattern=baseline", "--accel=cpu", "--vllm-arg=--no-such-vllm-flag"],
        "refuses it: unrecognized arguments", "vllm")
    add("plan-vllm-arg-bad-int", ["plan", "--pattern=baseline", "--accel=cpu", "--vllm-arg=--max-model-len=lots"],
        "refuses it", "vllm")
    add("render-vllm-arg-bad-choice", ["render", "--pattern=baseline", "--accel=cpu", "--out=OUT/new",
                                       "--vllm-arg=--dtype=float7"], "refuses it", "vllm")
    add("deploy-vllm-arg-missing-value", ["deploy", "--pattern=baseline", "--accel=cpu", "--dry-run",
                                          "--vllm-arg=--max-model-len"], "refuses it", "vllm")
    # render: where it writes, checked before rendering.
    add("render-out-proc", ["render", *SIM, "--out=/proc/lightrail"], "inside /proc")
    add("render-out-sys", ["render", *SIM, "--out=/sys/lightrail"], "inside /sys")
    add("render-out-file", ["render", *SIM, "--out=OUT/afile"], "exists and is not a directory")
    add("render-out-under-file", ["render", *SIM, "--out=OUT/afile/sub"], "which is a file")
    add("render-out-not-empty", ["render", *SIM, "--out=OUT/full"], "is not empty and was not written by `invoke render`")
    add("render-no-out", ["render", *SIM], "--out=DIR is required")
    add("render-charts-missing", ["render", *SIM, "--out=OUT/new", "--charts=OUT/nope"], "--charts=OUT/nope: no such directory")
    add("render-charts-file", ["render", *SIM, "--out=OUT/new", "--charts=OUT/afile"], "not a directory")
    add("render-schemas-missing", ["render", *SIM, "--out=OUT/new", "--schemas=OUT/nope"], "--schemas=OUT/nope: no such")
    add("deploy-charts-missing", ["deploy", *BASE["deploy"], "--charts=OUT/nope"], "--charts=OUT/nope: no such directory")
    for task in ("render", "deploy"):
        add(f"{task}-charts-not-gzip", [task, *BASE[task], "--charts=OUT/junkcharts"],
            "llm-d-infra.tgz is not a readable chart archive (not a gzip, bzip2 or xz tar)")
    for task in ("render", "deploy"):   # a chart of another version, from --charts: the fix names --charts too
        add(f"{task}-charts-old-version", [task, *BASE[task], "--charts=OUT/oldcharts"],
            "is version 0.0.1, but v1.4.0 is pinned (patterns/versions.yaml) (put llm-d-infra v1.4.0 there (helm pull "
            "... --version v1.4.0), or point --charts / LIGHTRAIL_CHARTS at the pinned charts)")
    # Tokens.
    add("deploy-token-file-missing", ["deploy", *BASE["deploy"], "--hf-token-file=OUT/nope"], "cannot read --hf-token-file")
    add("deploy-token-file-empty", ["deploy", *BASE["deploy"], "--hf-token-file=OUT/empty"], "is empty")
    add("deploy-token-file-dir", ["deploy", *BASE["deploy"], "--hf-token-file=OUT/full"], "cannot read --hf-token-file")
    add("doctor-token-file-missing", ["doctor", "--hf-token-file=OUT/nope"], "cannot read --hf-token-file")
    add("deploy-token-file-binary", ["deploy", *BASE["deploy"], "--hf-token-file=OUT/binary"], "is not a text file")
    add("deploy-token-file-two-words", ["deploy", *BASE["deploy"], "--hf-token-file=OUT/twowords"],
        "holds more than one word (whitespace inside the token); valid: only the token")
    add("deploy-smoke-no-wait", ["deploy", *BASE["deploy"], "--smoke", "--no-wait"], "drop --no-wait")
    add("doctor-pattern-without-accel", ["doctor", "--pattern=baseline"], "--pattern and --accel are required")
    # teardown and up.
    add("teardown-neither", ["teardown", "--dry-run"], "give exactly one of --pattern=NAME or --all")
    add("teardown-both", ["teardown", "--all", "--pattern=baseline", "--dry-run"], "give exactly one of")
    for bad in ("Bad_Name!", "UPPER", "-x", "a" * 33, "dot.ted"):
        add(f"up-name-{bad[:6]}", ["up", "--engine=kind", "--dry-run", f"--name={bad}"], "is not a valid kind cluster name: 1 to 32")
    # smoke and bench URLs.
    for task in ("smoke", "bench"):
        argv = [a for a in BASE[task] if not a.startswith("--url")]
        for bad, expected in (("http://[::1", "Invalid IPv6 URL"), ("http://127.0.0.1:99999", "Port out of range"),
                              ("ftp://host", "is not an HTTP URL"), ("not-a-url", "is not an HTTP URL"),
                              ("http://", "is not an HTTP URL"), ("http://127.0.0.1:0", "valid: 1-65535")):
            add(f"{task}-url-{bad[:12]}", [task, *argv, f"--url={bad}"], expected)
        add(f"{task}-url-space", [task, *argv, "--url= http://127.0.0.1:9"], "has whitespace in it")
    add("smoke-metrics-url-bad", ["smoke", *BASE["smoke"], "--metrics-url=localhost:8000"], "--metrics-url")
    for task in ("smoke", "bench", "migrate"):
        add(f"{task}-ca-file-missing", [task, *BASE[task], "--ca-file=OUT/none.pem"], "not a file")
        add(f"{task}-ca-file-not-pem", [task, *BASE[task], "--ca-file=OUT/afile"], "not a PEM CA bundle")
    add("bench-ca-file-in-cluster", ["bench", *BASE["bench"], "--in-cluster", "--ca-file=/etc/ssl/certs/ca-certificates.crt"],
        "--ca-file is for a harness on this machine")
    add("smoke-no-pattern", ["smoke", URL], PATTERNS)
    # bench.
    add("bench-no-pattern", ["bench", "--scenario=smoke", URL], "--pattern is required")
    add("bench-no-scenario", ["bench", "--pattern=baseline", URL], "--scenario is required; valid: chat")
    add("bench-scenario-nope", ["bench", *BASE["bench"][:1], "--scenario=nope", URL], "valid: chat, multimodel-mix")
    add("bench-harness-foo", ["bench", *BASE["bench"], "--harness=foo"], "valid: vllm, inference-perf, guidellm")
    add("bench-tokenizer-missing", ["bench", *BASE["bench"], "--tokenizer=/nonexistent/tok"], "no such file or directory")
    add("bench-out-proc", ["bench", *BASE["bench"], "--out=/proc/results"], "inside /proc")
    add("bench-out-file", ["bench", *BASE["bench"], "--out=OUT/afile"], "exists and is not a directory")
    add("bench-compare-one-run", ["bench.compare", "RUN_A"], "two or more different runs, got 1")
    add("bench-compare-same-run", ["bench.compare", "RUN_A,RUN_A"], "two or more different runs, got 1")
    add("bench-compare-missing-run", ["bench.compare", "RUN_A,nope"], "nope is not a complete benchmark run")
    add("bench-compare-flag-as-run", ["bench.compare", "-x"], "is not a run name")
    add("bench-compare-out-file", ["bench.compare", "RUN_A,RUN_B", "--out=OUT/afile"], "exists and is not a directory")
    add("bench-compare-out-proc", ["bench.compare", "RUN_A,RUN_B", "--out=/proc/cmp"], "inside /proc")
    add("bench-compare-out-not-empty", ["bench.compare", "RUN_A,RUN_B", "--out=OUT/full"], "is not empty; valid:")
    add("bench-list-out-file", ["bench.list", "--out=OUT/afile"], "is not a directory")
    add("bench-list-out-missing", ["bench.list", "--out=OUT/nope"], "is missing")
    # migrate: every flag is checked before the cluster is read
    mig = BASE["migrate"]
    add("migrate-to-bad", ["migrate", "--pattern=caching", "--accel=sim", "--to=foo", "--dry-run"], STACKS)
    add("migrate-to-missing", ["migrate", "--pattern=caching", "--accel=sim", "--dry-run"], STACKS)
    add("migrate-no-pattern", ["migrate", "--to=kserve", "--dry-run"], PATTERNS)
    add("migrate-pattern-nope", ["migrate", "--pattern=nope", "--to=kserve", "--dry-run"], PATTERNS)
    add("migrate-no-accel", ["migrate", "--pattern=caching", "--to=kserve", "--dry-run"], "gpu | tpu | cpu | sim")
    for bad, expected in (("50,10,100", "must rise strictly"), ("10,50", "to 100"), ("abc", "--steps must be a whole"),
                          ("0,100", "--steps must be a whole number from 1"), ("10,,100", "--steps must be a whole"),
                          ("10,150", "from 1 to 100")):
        add(f"migrate-steps-{bad}", ["migrate", *mig, f"--steps={bad}"], expected)
    for flag in ("hold", "settle", "drain", "timeout", "latency-margin"):
        add(f"migrate-{flag}-abc", ["migrate", *mig, f"--{flag}=abc"], SECONDS)
        add(f"migrate-{flag}-negative", ["migrate", *mig, f"--{flag}=-5"], SECONDS)
    add("migrate-resume-and-rollback", ["migrate", "--pattern=caching", "--resume", "--rollback", "--dry-run"],
        "exclude each other")
    add("migrate-resume-with-to", ["migrate", "--pattern=caching", "--resume", "--to=kserve", "--dry-run"], "drop --to")
    add("migrate-no-surge-steps", ["migrate", *mig, "--no-surge", "--steps=10,100"], "exclude each other")
    add("migrate-no-surge-one-replica", ["migrate", "--pattern=baseline", "--accel=sim", "--to=kserve", "--dry-run",
                                         "--no-surge"], "--replicas=2")
    add("migrate-url-bad", ["migrate", *mig, "--url=http://[::1"], "not a valid URL")
    add("migrate-url-scheme", ["migrate", *mig, "--url=ftp://x"], "not an HTTP URL")
    add("migrate-metrics-url-bad", ["migrate", *mig, "--metrics-url=ftp://x"], "--metrics-url 'ftp://x' is not an HTTP URL")
    add("migrate-live-without-yes", ["migrate", "--pattern=caching", "--accel=sim", "--to=kserve"], "pass --yes")
    add("migrate-topology-on-sim", ["migrate", *mig, "--topology=2x2"], "--topology")
    add("migrate-warm-missing", ["migrate", *mig, "--warm-prompts=OUT/nope"], "OUT/nope: cannot read it (No such file")
    add("migrate-warm-binary", ["migrate", *mig, "--warm-prompts=OUT/binary"], "OUT/binary: cannot read it")
    add("migrate-warm-not-jsonl", ["migrate", *mig, "--warm-prompts=OUT/afile"],
        'OUT/afile line 1: expected a JSON object with a non-empty "prompt" string')
    add("migrate-warm-empty", ["migrate", *mig, "--warm-prompts=OUT/empty"], "OUT/empty holds no prompt")
    add("migrate-warm-baseline", ["migrate", "--pattern=baseline", "--accel=sim", "--to=kserve", "--dry-run",
                                  "--warm-prompts=OUT/prompts.jsonl"], "pattern baseline has no prefix-cache-aware")
    add("migrate-resume-with-warm", ["migrate", "--pattern=caching", "--resume", "--dry-run",
                                     "--warm-prompts=OUT/prompts.jsonl"], "drop --to, --accel, --model, --alias and --warm")
    return out


CASES = cases()


@pytest.fixture(scope="module")
def api():
    with RecordingKubeAPI() as server:
        yield server


@pytest.fixture
def place(tmp_path, monkeypatch, api):
    """A working directory with a file, a non-empty directory and two stored runs; a recording kube API."""
    work = tmp_path / "work"
    (work / "full").mkdir(parents=True)
    (work / "full" / "mine.txt").write_text("the user's own file\n")
    (work / "afile").write_text("a file\n")
    (work / "junkcharts").mkdir()
    for chart in ("llm-d-infra", "llm-d-router-gateway", "llm-d-modelservice"):
        (work / "junkcharts" / f"{chart}.tgz").write_text("not a tar archive\n")
    for chart in ("llm-d-infra", "llm-d-router-gateway", "llm-d-modelservice"):
        (work / "oldcharts" / chart).mkdir(parents=True)
        (work / "oldcharts" / chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {chart}\nversion: 0.0.1\n")
    (work / "empty").write_text("")
    (work / "prompts.jsonl").write_text('{"prompt": "You are a terse assistant."}\n')
    (work / "binary").write_bytes(b"\xff\xfe\x00")
    (work / "twowords").write_text("hf_one two\n")
    for run in ("RUN_A", "RUN_B"):
        (work / "results" / run).mkdir(parents=True)
        for name in ("summary.json", "metadata.json"):
            (work / "results" / run / name).write_text("{}")
    monkeypatch.chdir(work)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    monkeypatch.setenv("LIGHTRAIL_RESULTS", str(work / "results"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("LIGHTRAIL_CHARTS", raising=False)
    api.requests.clear()
    api.writes.clear()
    return work


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real invoke program on these arguments, in this process."""
    code = 0
    try:
        Program(namespace=tasks.ns, binary="invoke").run(["invoke", *argv])
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv, expected", CASES)
def test_bad_input_is_refused_before_anything_happens(argv, expected, place, api, capsys):
    argv = [a.replace("OUT/", f"{place}/") for a in argv]
    before = tree(place)
    code, out, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 1, f"exit {code}; stdout: {out[-500:]}; stderr: {err[-500:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected.replace("OUT/", f"{place}/") in lines[0], lines[0]
    assert out == "", f"a refused command printed on stdout: {out[:300]}"
    assert tree(place) == before, "a refused command wrote files"
    assert api.requests == [] and api.writes == [], f"a refused command reached the cluster: {api.requests[:3]}"


def test_there_are_at_least_150_cases():
    assert len(CASES) >= 150, len(CASES)


@pytest.mark.parametrize("argv", [
    ["plan", *SIM, "--namespace=Bad_NS"], ["up", "--engine=kind", "--dry-run", "--name=Bad_Name!"], ["teardown", "--all", "--timeout=abc"],
    ["smoke", "--pattern=baseline", "--url=http://[::1"], ["bench.compare", "RUN_A"],
    ["plan", "--pattern=moe", "--accel=gpu", "--vllm-arg=--data-parallel-size=3"],   # imports vLLM, which logs
])
def test_the_real_entry_point_keeps_the_contract(argv, place, api):
    proc = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *argv], cwd=place,
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert api.requests == [] and api.writes == []


def test_json_output_carries_the_error_too(place, capsys):
    code, out, err = run(["smoke", "--pattern=baseline", "--url=http://u:hunter2@[::1", "-o", "json"], capsys)
    assert code == 1 and json.loads(out)["ok"] is False and err.startswith("error: ")
    assert "hunter2" not in out + err, "credentials in --url were echoed"
    code, out, err = run(["plan", *SIM, "--replicas=0", "--output=yaml"], capsys)
    assert code == 1 and out.startswith("ok: false\nerror: --replicas must be") and err.startswith("error: ")


@pytest.mark.parametrize("argv, expected", [
    (["status"], "is not a kubeconfig (expected a mapping with contexts:, got list)"),
    (["deploy", *SIM, "--dry-run"], "is not a kubeconfig"),
])
def test_a_kubeconfig_that_is_a_list(argv, expected, place, capsys, monkeypatch):
    (place / "list.yaml").write_text("- a\n- b\n")
    monkeypatch.setenv("KUBECONFIG", str(place / "list.yaml"))
    code, out, err = run(argv, capsys)
    assert code == 1 and err.startswith(f"error: kubeconfig {place / 'list.yaml'} {expected}") and out == ""


@pytest.mark.parametrize("content, expected", [
    ("contexts: [unclosed\n", "is not valid YAML (line 2)"),
    (None, "is a directory; valid: a kubeconfig file"),
])
def test_kubeconfig_problems_name_the_file(content, expected, place, capsys, monkeypatch):
    path = place / "kubeconfig"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(path))
    code, out, err = run(["status"], capsys)
    assert code == 1 and err.startswith(f"error: kubeconfig {path} {expected}") and err.count("\n") == 1


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe\x00garbage", "{path} is not a text file (UTF-8 YAML); valid: a kubeconfig file"),
    (b"contexts: [a, b]\n",
     "{path} is not a kubeconfig (contexts: expected a list of entries with a name, got ['a', 'b'])"),
    (b"users: 5\n", "{path} is not a kubeconfig (users: expected a list of entries with a name, got 5)"),
    (b"contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: y\n",
     "the kubeconfig's current-context 'y' is not one of its contexts; valid: x"),
])
@pytest.mark.parametrize("task", [["status"], ["deploy", *SIM]])
def test_kubeconfig_contents_that_kubectl_would_refuse_are_named(content, expected, task, place, capsys, monkeypatch):
    path = place / "kubeconfig"
    path.write_bytes(content)
    monkeypatch.setenv("KUBECONFIG", str(path))
    code, out, err = run(task, capsys)
    assert (code, out) == (1, "") and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected.format(path=path) in err


def test_a_dry_run_without_a_kube_context_that_is_refused_prints_nothing_on_stdout(place, capsys, monkeypatch):
    """The "no current kube context" note waits until the render is valid: a refused command prints only its error."""
    monkeypatch.setenv("KUBECONFIG", str(place / "absent"))
    code, out, err = run(["deploy", *SIM, "--dry-run", f"--charts={place}/junkcharts"], capsys)
    assert (code, out) == (1, "") and err.startswith("error: ") and err.count("\n") == 1, out + err


def test_a_missing_kubeconfig_is_named(place, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(place / "absent"))
    code, out, err = run(["status"], capsys)
    assert code == 1 and err.startswith("error: no current kube context and no --kube-context given")
    assert f"[kubeconfig: {place / 'absent'} (no such file)]" in err


def test_an_hf_token_variable_with_two_words_is_refused_without_quoting_it(place, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_first secondhalf")
    code, out, err = run(["deploy", *SIM, "--dry-run"], capsys)
    assert (code, out) == (1, "") and err.startswith("error: HF_TOKEN holds more than one word")
    assert "first" not in err and "secondhalf" not in err


def test_a_results_directory_named_by_lightrail_results_must_exist(place, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTRAIL_RESULTS", str(place / "typo"))
    code, out, err = run(["bench.list"], capsys)
    assert (code, out) == (1, "")
    assert err == f"error: LIGHTRAIL_RESULTS {place / 'typo'} is missing; valid: a results directory " \
                  "(see LIGHTRAIL_RESULTS)\n"


def test_bench_offline_without_a_tokenizer_says_what_to_pass(place, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run(["bench", "--pattern=baseline", "--scenario=smoke", URL, "--dry-run"], capsys)
    assert code == 1 and err.strip().endswith("pass --tokenizer=PATH (offline)")


# ---------------------------------------------------------------------------------------------
# One flag convention, as `invoke --help TASK` shows it, and as docs/conventions.md states it


def all_tasks():
    names = []
    for name, coll in [("", tasks.ns), *[(n + ".", c) for n, c in tasks.ns.collections.items()]]:
        names += [f"{name}{t}" for t in coll.tasks]
    return names


def task_help(name: str, capsys) -> str:
    code, out, err = run(["--help", name], capsys)
    assert code == 0 and out.startswith("Usage: "), err
    return out


def documented_flags() -> dict[str, tuple[str, set[str]]]:
    """short -> (long, tasks) from the flags table of docs/conventions.md."""
    table = {}
    for line in (ROOT / "docs" / "conventions.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`-") and cells[0] != "`-h`":
            listed = {t.split("`")[1] for t in cells[3].split(", ")}
            table[cells[0].strip("`")] = (cells[1].strip("`"), {"bench.run" if t == "bench" else t for t in listed})
    return table


def test_every_task_keeps_the_flag_convention_in_its_help(capsys):
    documented = documented_flags()
    assert set(documented) == {"-k", "-n", "-o"}
    seen: dict[str, set[str]] = {short: set() for short in documented}
    for name in all_tasks():
        text = task_help(name, capsys)
        options = [line.split("   ")[0].strip() for line in text.split("Options:")[-1].splitlines() if line.strip()]
        for option in options:
            if option.startswith("-") and not option.startswith("--"):
                short, long = option.split(",")[0].split()[0], (option.split("--") + [""])[1].split("=")[0]
                assert short in documented, f"{name}: short flag {short} is not in docs/conventions.md"
                assert documented[short][0] == f"--{long}", f"{name}: {short} is --{long}"
                seen[short].add(name)
        assert not any(o.startswith("-h") for o in options), f"{name}: -h must be help"
        if name == "test":
            continue
        assert "--json" not in text and "--markdown" not in text, f"{name}: one output flag, -o/--output"
    for short, (long, listed) in documented.items():
        assert seen[short] == listed, f"docs/conventions.md lists {long} for {sorted(listed)}; tasks: {sorted(seen[short])}"


@pytest.mark.parametrize("name", all_tasks())
def test_dash_h_is_help_everywhere(name, capsys):
    code, out, err = run([name, "-h"], capsys)
    assert code == 0 and out.startswith("Usage: ") and f" {name} " in out.splitlines()[0], out[:200] + err


def test_documented_exit_codes_are_the_ones_used():
    text = (ROOT / "docs" / "conventions.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 130 |", "| 141 |"):
        assert code in text
    source = "".join(p.read_text() for p in (ROOT / "lightrail" / "cli").glob("*.py"))
    assert "Exit(code=1)" in source and "Exit(code=130)" in source and "BROKEN_PIPE = 141" in source


@pytest.mark.parametrize("argv", [["plan", "--pattern=multimodel", "--accel=gpu", "-o", "json"], ["patterns"]])
def test_a_reader_that_stops_early_ends_the_task_quietly(argv, place):
    """`invoke plan ... | head`: the pipe is closed before the task writes; no traceback, exit 141."""
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *argv], cwd=place,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err


# ---------------------------------------------------------------------------------------------
# Valid input: dry runs exit 0 with runnable commands, documents on stdout, full width when piped


def test_a_dry_run_without_a_kube_context_prints_runnable_commands(place, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(place / "absent"))
    code, out, err = run(["deploy", *SIM, "--stack=kserve", "--dry-run"], capsys)
    assert code == 0, err
    commands = [line.strip()[2:] for line in out.splitlines() if line.startswith("    $ ")]
    assert commands and all(c.startswith("kubectl apply --server-side") for c in commands)
    assert "--context" not in out and "to no kube context, namespace lightrail — dry run" in out
    assert out.splitlines()[-1].startswith("dry run: 4 step(s), 7 object(s) (LLMInferenceService x1, Namespace x1, ")
    assert out.splitlines()[-1].endswith("; context (none), namespace lightrail; nothing was changed")


def test_prereqs_dry_run_exits_0_and_says_what_a_real_run_would_need(place, capsys):
    code, out, err = run(["prereqs", "--stack=kserve", "--dry-run"], capsys)
    assert code == 0 and "missing: KServe" in out and "a real run ends with exit code 1" in out


def test_doctor_does_not_call_itself_a_dry_run(place, capsys, monkeypatch):
    code, out, err = run(["doctor", "-o", "json"], capsys)
    assert "dry run" not in out + err
    report = json.loads(out)   # one document, though checks fail (an empty cluster has no CRDs)
    assert code == 1 and not report["ok"] and report["context"] == "fake"
    assert err.splitlines() == ["doctor on context fake (current context), namespace lightrail (reads only)",
                                f"error: {sum(c['status'] == 'fail' for c in report['checks'])} check(s) failed"]
    assert {c["name"] for c in report["checks"]} >= {"tool helm", "cluster"}
    code, out, err = run(["doctor"], capsys)
    assert "doctor on context fake (current context), namespace lightrail (reads only)" in out
    assert "dry run" not in out + err


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_status_reads_with_or_without_dry_run(extra, place, capsys, api):
    code, out, err = run(["status", *extra, "-o", "yaml"], capsys)
    assert code == 0 and out == "[]\n", err
    code, out, err = run(["status", *extra, "-n", "team-a"], capsys)
    assert code == 0 and "no Lightrail deployments found" in out
    assert any("/namespaces/team-a/" in r for r in api.requests)


def test_piped_tables_are_not_cut_at_80_columns(place, capsys):
    model = "some-organisation/a-model-with-a-rather-long-name-that-would-not-fit-in-eighty-columns"
    code, out, err = run(["plan", "--pattern=baseline", "--accel=cpu", f"--model={model}",
                          "--vllm-arg=--max-num-batched-tokens=8192"], capsys)
    assert code == 0 and model in out and "--max-num-batched-tokens=8192" in out and "…" not in out


def test_render_writes_plain_yaml_and_names_the_real_directory(place, capsys):
    target = place / "deep" / "er" / "out"
    charts = ROOT.parent / "shared" / "upstream" / "charts"
    chosen = [f"--charts={charts}"] if charts.is_dir() else ["--offline"]
    code, out, err = run(["render", *SIM, f"--out={target}", *chosen], capsys)
    assert code == 0, err
    assert f"  wrote {target}/helmfile/state.yaml\n" in out and "cd OUT/" not in out
    if charts.is_dir():
        assert f"cd {target}/helmfile && helmfile" in out
    for path in target.rglob("*.yaml"):
        text = path.read_text()
        assert "&id0" not in text and "*id0" not in text, path
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_corrupt_render_cache_entry_is_rebuilt(place, capsys):
    from lightrail import render as rendering
    from lightrail.plan import Request, build_plan
    from lightrail.settings import cache_dir

    plan = build_plan(Request(pattern="baseline", accel="sim", stack="kserve"))
    first = rendering.render_validated(plan)
    (entry,) = cache_dir("render").glob("*.json")
    for corrupt in ('{"objects": "not a list", "artifacts": {}, "notes": [], "complete": true}', "[1, 2]",
                    '{"objects": [], "artifacts": {"a": 1}, "notes": [], "complete": true}', "{not json"):
        entry.write_text(corrupt)
        assert rendering.render_validated(plan).objects == first.objects
        assert json.loads(entry.read_text())["objects"] == first.objects, "the entry was rebuilt"


def test_bench_dry_run_masks_credentials_in_the_url(place, capsys):
    code, out, err = run(["bench", "--pattern=baseline", "--scenario=smoke", "--tokenizer=/",
                          "--url=http://me:hunter2@127.0.0.1:9/?api_key=s3cret", "--dry-run"], capsys)
    assert code == 0, err
    assert "hunter2" not in out + err and "s3cret" not in out + err and "http://***@127.0.0.1:9" in out


@pytest.fixture
def web_page(tmp_path):
    """A real HTTP server that is not an OpenAI API: an HTML directory listing, 404 pages."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("scheme, expected", [
    ("http", "answers HTTP but is not an OpenAI-compatible API: GET /v1/models returned HTTP 404 (text/html"),
    ("https", "did not answer: TLS handshake failed"),
])
def test_smoke_fails_at_once_when_waiting_cannot_help(scheme, expected, web_page, place, capsys):
    import time

    start = time.monotonic()
    code, out, err = run(["smoke", "--pattern=baseline", f"--url={scheme}://127.0.0.1:{web_page}", "--timeout=600"],
                         capsys)
    assert code == 1 and time.monotonic() - start < 60   # far from the 600-s timeout, even on a loaded machine
    assert err.count("\n") == 1 and expected in err and "<html" not in err.lower() and "<!doctype" not in err.lower()


def test_up_renders_its_plan_before_the_first_step(place, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTRAIL_CHARTS", str(place / "full"))   # a directory without the upstream charts
    code, out, err = run(["up", "--engine=kind", "--dry-run"], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1, out + err
    assert err.startswith("error: chart ") and f"not found in {place / 'full'}" in err
    assert "point --charts / LIGHTRAIL_CHARTS elsewhere" in err


def invoke_parse_errors() -> list[tuple[list[str], str]]:
    """(argv, message) from the table of invoke's own parse errors in docs/conventions.md."""
    text = (ROOT / "docs" / "conventions.md").read_text().split("### Flag syntax errors are invoke's")[1]
    rows = []
    for line in text.split("\n\n")[2].splitlines()[2:]:
        typed, seen = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((typed.split("`")[1].split()[1:], seen.strip("`")))
    return rows


def test_invokes_parse_errors_are_documented_as_the_user_sees_them(place, api, capsys):
    """What Lightrail cannot word (invoke prints its ParseError itself) is at least one line, exit 1,
    nothing done - and exactly what the docs say."""
    rows = invoke_parse_errors()
    assert len(rows) == 5
    for argv, message in rows:
        before = tree(place)
        code, out, err = run(argv, capsys)
        assert (code, out, err) == (1, "", message + "\n"), argv
        assert tree(place) == before and api.requests == []
    proc = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), *rows[0][0]], cwd=place,
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", rows[0][1] + "\n")
