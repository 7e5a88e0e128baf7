"""Benchmarks without a server: scenarios, harness command lines checked by the harnesses' own
parsers, results parsed from recorded real harness output, the store, the in-cluster Job, CLI."""
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightrail.bench import (compare, guidellm, harnesses, incluster, inference_perf, runner, scenarios, store, summary,
                             vllm_serve)
from lightrail.bench.harnesses import Target
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.settings import ROOT
from lightrail.validate import check
from tests.conftest import PHI, QWEN

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
TARGET = Target("http://127.0.0.1:8000", (QWEN,), "/models/tok", ("http://127.0.0.1:8000/metrics",))
MULTI = Target("http://127.0.0.1:8000", (QWEN, PHI), "/models/tok")


def invoke(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --- scenarios ------------------------------------------------------------------------------

def test_every_shipped_scenario_loads():
    assert {"smoke", "chat", "shared-prefix", "multimodel-mix", "sweep"} <= set(scenarios.available())
    for name in scenarios.available():
        s = scenarios.load_scenario(name)
        assert s.points and s.description


def test_sweep_points_have_rising_rates_and_their_own_seeds():
    s = scenarios.load_scenario("sweep")
    assert [p.request_rate for p in s.points] == [2, 4, 8, 16, 32]
    assert len({p.seed for p in s.points}) == len(s.points)
    assert scenarios.load_scenario("smoke").points[0].request_rate == math.inf


@pytest.mark.parametrize("data, message", [
    ({"dataset": "random", "input_len": 8, "output_len": 8, "requests": 4, "colour": 1}, r"unknown key\(s\) colour"),
    ({"dataset": "sharegpt", "input_len": 8, "output_len": 8, "requests": 4}, "valid: random, shared-prefix"),
    ({"dataset": "random", "input_len": 0, "output_len": 8, "requests": 4}, "input_len must be a whole number"),
    ({"dataset": "shared-prefix", "input_len": 8, "output_len": 8, "requests": 4}, "needs prefix_len"),
    ({"dataset": "random", "input_len": 8, "output_len": 8, "requests": 4, "request_rate": -1}, "request_rate"),
    ({"dataset": "random", "input_len": 8, "output_len": 8, "requests": 4, "sweep": {"seed": [1]}}, "sweep must map"),
    ({"dataset": "random", "output_len": 8, "requests": 4}, "input_len is required"),
])
def test_bad_scenarios_are_refused(data, message):
    with pytest.raises(LightrailError, match=message):
        scenarios.parse("bad", data)


def test_scenario_from_a_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset: random\ninput_len: 8\noutput_len: 4\nrequests: 2\n")
    assert scenarios.load_scenario(str(path)).name == "mine"
    with pytest.raises(LightrailError, match="unknown scenario 'nope'; valid: chat, multimodel-mix"):
        scenarios.load_scenario("nope")


# --- vllm bench serve -----------------------------------------------------------------------

def vllm_parse(args):
    """Parse with vLLM's own `vllm bench serve` parser: our flags must be ones it accepts."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args(args)


@pytest.mark.vllm
def test_vllm_args_for_random_and_shared_prefix_are_accepted_by_vllm():
    smoke = scenarios.load_scenario("smoke")
    ns = vllm_parse(vllm_serve.bench_args(smoke, smoke.points[0], TARGET, "/out"))
    assert (ns.dataset_name, ns.random_input_len, ns.random_output_len, ns.num_prompts) == ("random", 64, 16, 16)
    assert (ns.max_concurrency, ns.request_rate, ns.base_url, ns.model) == (4, math.inf, TARGET.url, QWEN)
    assert ns.save_detailed and ns.result_dir == "/out" and ns.ignore_eos and ns.lora_modules is None
    shared = scenarios.load_scenario("shared-prefix")
    ns = vllm_parse(vllm_serve.bench_args(shared, shared.points[0], TARGET, "/out"))
    assert (ns.dataset_name, ns.prefix_repetition_prefix_len, ns.prefix_repetition_num_prefixes,
            ns.prefix_repetition_suffix_len, ns.prefix_repetition_output_len) == ("prefix_repetition", 512, 2, 32, 8)


@pytest.mark.vllm
def test_multimodel_mix_sends_round_robin_over_every_model():
    mix = scenarios.load_scenario("multimodel-mix")
    ns = vllm_parse(vllm_serve.bench_args(mix, mix.points[0], MULTI, "/out"))
    assert ns.lora_modules == [QWEN, PHI] and ns.lora_assignment == "round-robin"
    smoke = scenarios.load_scenario("smoke")
    assert "--lora-modules" not in vllm_serve.bench_args(smoke, smoke.points[0], MULTI, "/out")


def test_vllm_result_is_normalized_from_a_recorded_run():
    raw = json.loads((FIXTURES / "vllm-bench-serve-random.json").read_text())
    p = vllm_serve.from_result(raw)
    assert p["requests"] == {"ok": 16, "failed": 0}
    assert p["tokens"] == {"input": 1033, "output": 256}
    assert p["latency_ms"]["ttft"]["p90"] == pytest.approx(raw["p90_ttft_ms"], abs=1e-3)
    assert p["latency_ms"]["e2e"]["p99"] == pytest.approx(raw["p99_e2el_ms"], abs=1e-3)
    assert p["throughput"]["output_tokens_per_s"] == pytest.approx(256 / raw["duration"], rel=1e-3)


# --- inference-perf and guidellm ------------------------------------------------------------

def test_inference_perf_config_maps_the_scenario():
    shared = scenarios.load_scenario("shared-prefix")
    cfg = inference_perf.config(shared, shared.points[0], TARGET, Path("/out"))
    assert cfg["data"]["shared_prefix"]["system_prompt_len"] == 512
    assert cfg["data"]["shared_prefix"]["num_groups"] * cfg["data"]["shared_prefix"]["num_prompts_per_group"] >= 32
    assert cfg["load"] == {"type": "concurrent", "stages": [{"num_requests": 32, "concurrency_level": 4}]}
    sweep = scenarios.load_scenario("sweep")
    cfg = inference_perf.config(sweep, sweep.points[1], TARGET, Path("/out"))
    assert cfg["load"] == {"type": "poisson", "stages": [{"rate": 4.0, "duration": 12}]}
    with pytest.raises(LightrailError, match="use --harness=vllm"):
        mix = scenarios.load_scenario("multimodel-mix")
        inference_perf.config(mix, mix.points[0], MULTI, Path("/out"))


@pytest.mark.skipif(not harnesses.installed("inference-perf"),
                    reason="inference-perf is not installed: `invoke bench --harness=inference-perf` installs it "
                           "(into LIGHTRAIL_HARNESSES)")
def test_inference_perf_accepts_our_config(tmp_path):
    for name in ("smoke", "shared-prefix", "sweep", "chat"):
        s = scenarios.load_scenario(name)
        argv, files = inference_perf.command(s, s.points[0], TARGET, tmp_path)
        (tmp_path / inference_perf.CONFIG).write_text(files[inference_perf.CONFIG])
        python = harnesses.venv_dir("inference-perf") / "bin" / "python"
        proc = subprocess.run([str(python), "-c", "import sys; from inference_perf.config import read_config; "
                               "read_config(sys.argv[1])", argv[-1]], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_inference_perf_report_is_normalized_from_a_recorded_run():
    p = inference_perf.from_report(json.loads((FIXTURES / "inference-perf-summary_lifecycle_metrics.json").read_text()))
    assert p["requests"] == {"ok": 16, "failed": 0} and p["tokens"] == {"input": 1024, "output": 256}
    assert 0 < p["latency_ms"]["ttft"]["p50"] < p["latency_ms"]["ttft"]["p99"] < 1000     # seconds became ms


def test_guidellm_config_and_recorded_report():
    sweep = scenarios.load_scenario("sweep")
    spec = guidellm.config(sweep, sweep.points[2], TARGET, Path("/out"))["spec"]
    assert spec["profile"] == {"kind": "constant", "rate": [8.0]}
    assert spec["constraints"] == [{"kind": "max_requests", "count": 48}]
    shared = scenarios.load_scenario("shared-prefix")
    data = guidellm.config(shared, shared.points[0], TARGET, Path("/out"))["spec"]["data"][0]
    assert (data["prefix_tokens"], data["prefix_count"]) == (512, 2)
    report = json.loads((FIXTURES / "guidellm-benchmarks.json").read_text())
    assert report["benchmarks"][0]["metrics"]["request_totals"]["successful"] == 11   # its window, not all requests
    p = guidellm.from_report(report)
    assert p["requests"] == {"ok": 16, "failed": 0} and p["tokens"] == {"input": 1024, "output": 256}
    assert p["latency_ms"]["e2e"]["p50"] > p["latency_ms"]["ttft"]["p50"] > 0


def test_unknown_harness_names_the_valid_ones():
    with pytest.raises(LightrailError, match="valid: vllm, inference-perf, guidellm"):
        harnesses.adapter("locust")


# --- summary and store ----------------------------------------------------------------------

def test_cost_per_million_output_tokens():
    assert summary.cost_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert summary.cost_per_million(3.6, 0.0) is None


def test_server_side_hit_rate_and_totals():
    before = {"vllm:prefix_cache_hits": 10, "vllm:prefix_cache_queries": 100, "vllm:request_success": 5}
    after = {"vllm:prefix_cache_hits": 70, "vllm:prefix_cache_queries": 200, "vllm:request_success": 9}
    side = summary.server_side(before, after)
    assert side["prefix_cache"] == {"hits": 60, "queries": 100, "hit_rate": 0.6}
    assert side["server"]["requests_ok"] == 4
    assert summary.server_side(None, after) == {"server": None, "prefix_cache": None}


def stored_run(root, scenario="smoke", when="20260101-000000", accel="gpu"):
    """A complete run dir made from the recorded real vllm bench serve result."""
    point = vllm_serve.from_result(json.loads((FIXTURES / "vllm-bench-serve-random.json").read_text()))
    point = {"load": {"request_rate": "inf", "max_concurrency": 4}, **point, "server": None, "prefix_cache": None,
             "cost_per_million_output_tokens": 1.0}
    staged = store.stage(root, f"{when}-baseline-llmd-{accel}-{scenario}")
    meta = {"pattern": "baseline", "stack": "llmd", "accel": accel, "harness": {"name": "vllm", "version": "x"},
            "git": {"commit": "abc"}}
    return store.commit(staged, {"scenario": scenario, "harness": "vllm", "currency": "USD", "points": [point],
                                 "totals": summary.totals([point])}, meta)


def test_store_lists_only_complete_runs_newest_first(tmp_path):
    old = stored_run(tmp_path, when="20260101-000000")
    new = stored_run(tmp_path, when="20260102-000000")
    store.abandon(store.stage(tmp_path, "20260103-000000-baseline-llmd-gpu-smoke"))
    store.stage(tmp_path, "20260104-000000-baseline-llmd-gpu-smoke")        # in progress
    assert store.runs(tmp_path) == [new, old]
    assert (tmp_path / ".failed" / "20260103-000000-baseline-llmd-gpu-smoke").is_dir()
    assert store.resolve(new.name, tmp_path) == new
    with pytest.raises(LightrailError, match="not a complete benchmark run"):
        store.resolve("20260103-000000-baseline-llmd-gpu-smoke", tmp_path)


def test_compare_refuses_different_scenarios_unless_mixed(tmp_path):
    a, b = stored_run(tmp_path, "smoke", "20260101-000000"), stored_run(tmp_path, "chat", "20260101-000001")
    with pytest.raises(LightrailError, match="different scenarios \\(chat, smoke\\)"):
        compare.compare([a, b], tmp_path / "cmp")
    result = compare.compare([a, b], tmp_path / "cmp", mixed=True)
    assert "baseline/llmd/gpu smoke" in result.table and "baseline/llmd/gpu chat" in result.table
    assert all(f.stat().st_size > 0 for f in result.files)


# --- in-cluster Job -------------------------------------------------------------------------

def job_commands():
    """The caching pattern's sweep as a Job: validated, and its `vllm bench serve` lines."""
    plan = build_plan(Request(pattern="caching", accel="gpu"))
    sweep = scenarios.load_scenario("sweep")
    target = Target(incluster.default_url(plan), plan.served_models, plan.served_models[0])
    name = incluster.job_name("20260101-000000-caching-llmd-gpu-sweep")
    job = incluster.job(plan, sweep, target, name)
    check([job])                                                   # real Kubernetes schema, strict
    assert len(name) <= 63 and job["metadata"]["labels"]["lightrail.dev/pattern"] == "caching"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == plan.versions["images"]["vllm-cpu"]
    commands = [line for line in container["command"][2].splitlines() if line.startswith("vllm bench serve")]
    assert len(commands) == len(sweep.points)
    assert "caching-gateway-istio.lightrail.svc.cluster.local" in commands[0]
    return commands


def test_in_cluster_job_is_valid_and_runs_every_point():
    assert len(job_commands()) == 5


@pytest.mark.vllm
def test_in_cluster_commands_are_accepted_by_vllm():
    for line in job_commands():
        ns = vllm_parse(shlex.split(line)[3:])
        assert ns.result_dir == incluster.RESULTS and not ns.save_detailed


def test_in_cluster_results_are_read_from_the_job_log():
    raw = (FIXTURES / "vllm-bench-serve-random.json").read_text()
    log = f"noise\n{incluster.MARKER} point-00 <==\n{json.dumps(json.loads(raw))}\n{incluster.MARKER} point-01 <==\n{{}}\n"
    results = incluster.results(log)
    assert results["point-00"]["completed"] == 16 and results["point-01"] == {}


def test_in_cluster_needs_a_url_where_the_gateway_name_is_unknown():
    plan = build_plan(Request(pattern="baseline", accel="gpu", stack="kserve"))
    with pytest.raises(LightrailError, match="--url="):
        incluster.default_url(plan)


# --- CLI ------------------------------------------------------------------------------------

def test_dry_run_prints_commands_and_writes_nothing(tmp_path):
    proc = invoke("bench", "--pattern=baseline", "--url=http://127.0.0.1:9", "--scenario=sweep", "--dry-run",
                  f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("-m lightrail.bench.vllm_bench") == 5 and "--request-rate 32" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_in_cluster_dry_run_prints_the_job(tmp_path):
    proc = invoke("bench", "--pattern=caching", "--scenario=shared-prefix", "--in-cluster", "--dry-run",
                  f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout.split("\n", 1)[1])
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "lightrail"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (("--pattern=baseline", "--scenario=nope"), "error: unknown scenario 'nope'; valid: chat"),
    (("--pattern=baseline", "--scenario=smoke", "--harness=locust", "--url=http://127.0.0.1:9", "--dry-run"),
     "error: unknown harness 'locust'; valid: vllm, inference-perf, guidellm"),
    (("--pattern=baseline", "--scenario=smoke", "--url=http://127.0.0.1:9"), "error: cannot reach http://127.0.0.1:9"),
    (("--pattern=baseline", "--scenario=smoke", "--url=ftp://x"), "error: --url 'ftp://x' is not an HTTP URL"),
    (("--scenario=smoke",), "error: --pattern is required"),
    (("--pattern=caching", "--scenario=smoke", "--in-cluster", "--harness=guidellm", "--dry-run"),
     "--in-cluster runs `vllm bench serve`"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
    proc = invoke("bench", *args, f"--out={tmp_path}")
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_list_and_compare_cli(tmp_path):
    run = stored_run(tmp_path)
    other = stored_run(tmp_path, when="20260102-000000")
    proc = invoke("bench.list", f"--out={tmp_path}")
    assert proc.returncode == 0 and run.name in proc.stdout
    listed = json.loads(invoke("bench.list", f"--out={tmp_path}", "-o", "json").stdout)
    assert [r["run"] for r in listed] == [other.name, run.name] and listed[0]["requests"]["ok"] > 0
    out = tmp_path / "cmp"
    proc = invoke("bench.compare", f"{run},{other}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert (out / "compare.md").read_text().count("| baseline/llmd/gpu") == 2
    proc = invoke("bench.compare", f"{run},{tmp_path / 'missing'}", f"--out={out}")
    assert proc.returncode == 1 and "is not a complete benchmark run" in proc.stderr


def test_in_cluster_run_collects_the_job_log_and_stores_the_run(tmp_path, monkeypatch):
    """Everything but the cluster: the Job is validated, its log parsed, the run stored complete."""
    recorded = json.loads((FIXTURES / "vllm-bench-serve-random.json").read_text())
    seen = {}

    def fake_run_job(manifest, *, kube_context, timeout):       # the one function that talks to a cluster
        check([manifest])
        seen.update(manifest=manifest, context=kube_context)
        return f"progress...\n{incluster.MARKER} point-00 <==\n{json.dumps(recorded)}\n"

    monkeypatch.setattr(incluster, "run_job", fake_run_job)
    plan = build_plan(Request(pattern="caching", accel="gpu"))
    smoke = scenarios.load_scenario("smoke")
    target = Target(incluster.default_url(plan), plan.served_models, plan.served_models[0])
    path = runner.run(plan, smoke, "vllm", target, tmp_path, in_cluster=True, kube_context="prod", log=lambda _: None)
    s, meta = store.load(path)
    assert s["totals"]["requests"] == {"ok": 16, "failed": 0} and s["points"][0]["server"] is None
    assert meta["in_cluster"] and meta["harness"]["version"].startswith("vllm image ")
    assert seen["context"] == "prod" and seen["manifest"]["metadata"]["name"] in (path / "raw" / "job.json").read_text()
    assert (path / "raw" / "job.log").is_file() and store.runs(tmp_path) == [path]


def test_in_cluster_job_without_results_leaves_no_run(tmp_path, monkeypatch):
    monkeypatch.setattr(incluster, "run_job", lambda manifest, **_: "the harness printed nothing\n")
    plan = build_plan(Request(pattern="caching", accel="gpu"))
    smoke = scenarios.load_scenario("smoke")
    target = Target(incluster.default_url(plan), plan.served_models, plan.served_models[0])
    with pytest.raises(LightrailError, match="printed no result for point-00"):
        runner.run(plan, smoke, "vllm", target, tmp_path, in_cluster=True, log=lambda _: None)
    assert store.runs(tmp_path) == [] and (tmp_path / ".failed").is_dir()


def test_missing_python_for_a_harness_names_the_fix():
    with pytest.raises(LightrailError, match=r"Python 9\.9 is needed.*pyenv install 9\.9"):
        harnesses.find_python("9.9")
    assert harnesses.pinned("inference-perf")["python"] == "3.12"
