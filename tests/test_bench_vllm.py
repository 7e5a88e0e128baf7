"""`invoke bench` with real harnesses against a real vLLM: the numbers must agree with vLLM's own
counters, shared prefixes must show up as prefix-cache hits, and failures must leave no run."""
import json
import os
import subprocess
import sys

import pytest

from lightrail.bench import harnesses, store
from lightrail.settings import ROOT
from lightrail.smoke import metrics
from tests.conftest import PHI, QWEN

pytestmark = pytest.mark.vllm


def bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, COLUMNS="200"))


def run_measured(server, tiny_model, out, scenario, *extra):
    """Run a scenario; return its summary and vLLM's own counter deltas over the run."""
    before = metrics.scrape([server.metrics_url])
    proc = bench("bench", "--pattern=baseline", f"--url={server.url}", f"--tokenizer={tiny_model}",
                 f"--scenario={scenario}", f"--out={out}", *extra)
    after = metrics.scrape([server.metrics_url])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = next(p for p in store.runs(out) if p.name.endswith(f"-{os.path.basename(str(scenario)).removesuffix('.yaml')}"))
    return path, json.loads((path / "summary.json").read_text()), metrics.delta(before, after)


def assert_counts_match(summary, delta):
    totals = summary["totals"]
    assert totals["requests"]["ok"] == delta[metrics.REQUESTS_OK] > 0
    assert totals["tokens"]["input"] == delta[metrics.PROMPT_TOKENS]
    assert totals["tokens"]["output"] == delta[metrics.GENERATION_TOKENS]
    assert totals["server"]["requests_ok"] == delta[metrics.REQUESTS_OK]


@pytest.fixture(scope="module")
def runs(vllm_server, tiny_model, tmp_path_factory):
    """smoke and shared-prefix with the default harness, each checked against vLLM's counters."""
    out = tmp_path_factory.mktemp("results")
    smoke = run_measured(vllm_server, tiny_model, out, "smoke")
    shared = run_measured(vllm_server, tiny_model, out, "shared-prefix")
    return out, smoke, shared


def test_smoke_counts_equal_vllm_counters(runs):
    _, (path, summary, delta), _ = runs
    assert_counts_match(summary, delta)
    assert summary["totals"]["requests"] == {"ok": 16, "failed": 0}
    assert summary["totals"]["tokens"]["output"] == 16 * 16                  # --ignore-eos: exactly output_len each
    point = summary["points"][0]
    for key in ("ttft", "tpot", "itl", "e2e"):
        assert point["latency_ms"][key]["p50"] is not None
    assert 0 < point["latency_ms"]["ttft"]["p50"] <= point["latency_ms"]["e2e"]["p99"]
    assert point["cost_per_million_output_tokens"] > 0
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["harness"]["name"] == "vllm" and meta["harness"]["version"].startswith("vllm")
    assert meta["models"] == [QWEN] and meta["scenario"]["name"] == "smoke" and meta["git"]["commit"]
    assert (path / "raw" / "point-00" / "result.json").is_file() and (path / "raw" / "point-00" / "harness.log").is_file()


def test_shared_prefix_counts_and_cache_hits(runs):
    _, (_, smoke, _), (_, shared, delta) = runs
    assert_counts_match(shared, delta)
    hit = shared["totals"]["prefix_cache"]["hit_rate"]
    assert hit > smoke["totals"]["prefix_cache"]["hit_rate"] + 0.5, (hit, smoke["totals"]["prefix_cache"])
    assert delta[metrics.PREFIX_HITS] == shared["totals"]["prefix_cache"]["hits"] > 0


def test_sweep_compare_writes_table_and_plots(runs, vllm_server, tiny_model, tmp_path):
    out, (smoke_path, _, _), (shared_path, _, _) = runs
    scenario = tmp_path / "mini-sweep.yaml"
    scenario.write_text("dataset: random\ninput_len: 32\noutput_len: 8\nrequests: 8\nsweep:\n  request_rate: [4, 16]\n")
    sweep_path, sweep, delta = run_measured(vllm_server, tiny_model, out, scenario)
    assert_counts_match(sweep, delta)
    assert [p["load"]["request_rate"] for p in sweep["points"]] == [4.0, 16.0]

    refused = bench("bench.compare", f"{smoke_path},{shared_path}", f"--out={tmp_path / 'x'}")
    assert refused.returncode == 1 and "different scenarios" in refused.stderr
    cmp_dir = tmp_path / "cmp"
    proc = bench("bench.compare", f"{smoke_path} {shared_path} {sweep_path}", "--mixed", f"--out={cmp_dir}")
    assert proc.returncode == 0, proc.stderr
    table = (cmp_dir / "compare.md").read_text()
    assert table.count("| baseline/llmd/gpu") == 4              # smoke, shared-prefix, two sweep points
    for png in ("latency.png", "throughput.png", "throughput-vs-latency.png"):
        data = (cmp_dir / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    listing = bench("bench.list", f"--out={out}")
    names = [p.name for p in store.runs(out)]
    assert listing.stdout.index(names[0]) < listing.stdout.index(names[-1])   # newest first


def test_harness_error_is_clear_and_leaves_no_run(vllm_server, tiny_model, tmp_path):
    proc = bench("bench", "--pattern=baseline", "--model=org/not-served", f"--url={vllm_server.url}",
                 f"--tokenizer={tiny_model}", "--scenario=smoke", f"--out={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: no request succeeded" in proc.stderr and "org/not-served" in proc.stderr
    assert store.runs(tmp_path) == [] and len(list((tmp_path / ".failed").iterdir())) == 1
    crash = bench("bench", "--pattern=baseline", f"--url={vllm_server.url}", "--tokenizer=/no/such/tokenizer",
                  "--scenario=smoke", f"--out={tmp_path}")
    assert crash.returncode == 1 and "Traceback" not in crash.stderr   # refused before the harness starts
    assert crash.stderr == "error: --tokenizer /no/such/tokenizer: no such file or directory; valid: a local " \
                           "tokenizer directory or a Hugging Face id\n"
    assert store.runs(tmp_path) == [] and len(list((tmp_path / ".failed").iterdir())) == 1


def test_multimodel_mix_spreads_requests_over_both_models(vllm_multimodel, tiny_model, tmp_path):
    before = [metrics.scrape([u]) for u in vllm_multimodel.metrics_urls]
    proc = bench("bench", "--pattern=multimodel", f"--url={vllm_multimodel.url}", f"--tokenizer={tiny_model}",
                 *[f"--metrics-url={u}" for u in vllm_multimodel.metrics_urls], "--scenario=multimodel-mix",
                 f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = [metrics.scrape([u]) for u in vllm_multimodel.metrics_urls]
    served = [metrics.delta(b, a)[metrics.REQUESTS_OK] for b, a in zip(before, after)]
    assert served == [20, 20]                                                 # round-robin over QWEN and PHI
    summary = json.loads((store.runs(tmp_path)[0] / "summary.json").read_text())
    assert summary["totals"]["requests"]["ok"] == summary["totals"]["server"]["requests_ok"] == 40
    assert json.loads((store.runs(tmp_path)[0] / "metadata.json").read_text())["models"] == [QWEN, PHI]


@pytest.mark.parametrize("harness", ["inference-perf", "guidellm"])
def test_optional_harnesses_agree_with_vllm_counters(harness, vllm_server, tiny_model, tmp_path):
    if not harnesses.installed(harness):
        pytest.skip(f"{harness} is not installed: `invoke bench --harness={harness}` installs it (LIGHTRAIL_HARNESSES)")
    for scenario in ("smoke", "shared-prefix"):
        _, summary, delta = run_measured(vllm_server, tiny_model, tmp_path, scenario, f"--harness={harness}")
        assert_counts_match(summary, delta)
        assert summary["harness"] == harness


def test_an_https_endpoint_with_a_private_ca_is_benchmarked_with_ca_file(vllm_server, tiny_model, tmp_path):
    """The harness (vllm bench serve) reaches a real vLLM through an HTTPS front whose CA only
    --ca-file names; every request is counted by vLLM itself. Without it: the certificate is named."""
    from lightrail.ops.controllers import serving_cert
    from lightrail.testing.tlsfront import TlsFront

    serving_cert(tmp_path / "front")
    with TlsFront(vllm_server.url, tmp_path / "front") as front:
        refused = bench("bench", "--pattern=baseline", f"--url={front.url}", f"--tokenizer={tiny_model}",
                        "--scenario=smoke", f"--out={tmp_path / 'results'}")
        assert refused.returncode == 1 and "its TLS certificate is not trusted (self-signed certificate): give the " \
            "CA that signed it with --ca-file" in refused.stderr, refused.stderr
        before = metrics.scrape([vllm_server.metrics_url])
        proc = bench("bench", "--pattern=baseline", f"--url={front.url}", f"--tokenizer={tiny_model}",
                     "--scenario=smoke", f"--out={tmp_path / 'results'}", f"--ca-file={tmp_path / 'front' / 'tls.crt'}",
                     f"--metrics-url={vllm_server.metrics_url}")
        after = metrics.scrape([vllm_server.metrics_url])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = store.runs(tmp_path / "results")
    assert_counts_match(json.loads((path / "summary.json").read_text()), metrics.delta(before, after))
