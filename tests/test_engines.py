"""Inference engines (patterns/engines.yaml, docs/engines.md): every engine x stack x accelerator
cell renders with the real charts / kustomize and validates against the real schemas, or is
refused with its reason; the endpoint picker reads metrics the engine exports."""
import re

import httpx
import pytest
import yaml

from lightrail import engines
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.render import render_validated
from lightrail.settings import charts_dir, schemas_dir

CATALOG = load_catalog()
OFFERED = [n for n, e in CATALOG.engines.items() if "refused" not in e]
needs_upstream = pytest.mark.skipif(charts_dir() is None or schemas_dir() is None,
                                    reason="needs LIGHTRAIL_CHARTS and LIGHTRAIL_SCHEMAS (the pinned charts and CRDs)")
# Why each refused cell is refused (a substring of the error): the matrix is data, the reasons upstream's.
REFUSED = {
    ("sim", None): "the simulator imitates vLLM",
    ("tpu", None): "TPU serving is vLLM TPU",
    ("cpu", "sglang"): "does not run on --accel=cpu; valid: gpu",
    ("cpu", "trtllm"): "does not run on --accel=cpu; valid: gpu",
    ("kserve", "trtllm"): "LLMInferenceService is built around vLLM",
    ("kserve", "llamacpp"): "LLMInferenceService is built around vLLM",
}


def refusal(engine, stack, accel):
    if engine == "vllm":
        return None
    for key in ((accel, None), (accel, engine), (stack, engine)):
        if key in REFUSED:
            return REFUSED[key]
    return None


def pods(objects):
    """(pod template metadata, spec) of every model-server workload."""
    out = []
    for o in objects:
        if o["kind"] == "Deployment" and "llm-d.ai/inference-serving" in o["spec"]["template"]["metadata"].get("labels", {}):
            out.append((o["spec"]["template"]["metadata"], o["spec"]["template"]["spec"]))
        if o["kind"] == "LLMInferenceService":
            out.append(({}, o["spec"]["template"]))
    return out


def picker_configs(objects):
    configs = []
    for o in objects:
        if o["kind"] == "ConfigMap" and "lightrail.yaml" in o.get("data", {}):
            configs.append(yaml.safe_load(o["data"]["lightrail.yaml"]))
        if o["kind"] == "LLMInferenceService":
            configs.append(o["spec"]["router"]["scheduler"]["config"]["inline"])
    return configs


@needs_upstream
@pytest.mark.parametrize("accel", list(CATALOG.accelerators))
@pytest.mark.parametrize("stack", ["llmd", "kserve"])
@pytest.mark.parametrize("engine", OFFERED)
def test_every_engine_stack_cell_renders_and_validates_or_is_refused(engine, stack, accel):
    pattern = "multimodel" if accel == "cpu" else "caching"   # both pattern flags on gpu; two models on cpu
    request = Request(pattern, accel, stack, engine=engine)
    reason = refusal(engine, stack, accel)
    if reason:
        with pytest.raises(LightrailError, match=re.escape(reason)):
            build_plan(request)
        return
    plan = build_plan(request)
    objects = render_validated(plan, charts=charts_dir(), schemas=schemas_dir()).objects
    spec = CATALOG.engines[engine]
    workloads = pods(objects)
    assert len(workloads) == len(plan.servers)
    for (meta, pod), server in zip(workloads, plan.servers):
        (container,) = pod["containers"]
        if engine == "vllm":
            assert engines.ENGINE_LABEL not in meta.get("labels", {})
            continue
        assert container["image"] == CATALOG.image(spec["accelerators"][accel]["image"])
        assert container["command"] == list(spec["command"])
        argv = " ".join(container["args"])
        assert "--port=8000" in argv or "--port 8000" in argv
        assert plan.client_model(server) in container["args"] or f"--served-model-name={plan.client_model(server)}" in argv
        assert "max-model-len" not in argv and "--enable-prefix-caching" not in argv   # vLLM's words, translated
        if stack == "llmd":
            assert meta["labels"][engines.ENGINE_LABEL] == spec["epp_engine"]
        else:
            assert "/mnt/models" in argv     # where KServe's storage initializer puts the weights
    for config in picker_configs(objects):
        source = next(p for p in config["plugins"] if p["type"] == "metrics-data-source")
        assert source["parameters"]["path"] == spec["metrics"]["path"]
        extractor = next(p for p in config["plugins"] if p["type"] == "core-metrics-extractor")
        if engine == "vllm":
            assert "parameters" not in extractor    # llm-d-router's default engine is vllm
        else:
            assert extractor["parameters"]["defaultEngine"] == spec["epp_engine"]


def test_llamacpp_gets_its_metric_map_sent_and_its_downloads_on_the_model_volume():
    plan = build_plan(Request("baseline", "cpu", "llmd", engine="llamacpp"))
    from lightrail.llmd.values import modelservice_values, router_values

    config = yaml.safe_load(router_values(plan, plan.servers[0])["router"]["epp"]["pluginsCustomConfig"]["lightrail.yaml"])
    extractor = next(p for p in config["plugins"] if p["type"] == "core-metrics-extractor")
    assert extractor["parameters"] == {"defaultEngine": "llamacpp", "engineConfigs": [{
        "name": "llamacpp", "queuedRequestsSpec": "llamacpp:requests_deferred",
        "runningRequestsSpec": "llamacpp:requests_processing", "kvUsageSpec": ""}]}
    container = modelservice_values(plan, plan.servers[0])["decode"]["containers"][0]
    assert {"name": "LLAMA_CACHE", "value": "/model-cache"} in container["env"]
    assert container["args"][:2] == ["-hf", "Qwen/Qwen2.5-0.5B-Instruct-GGUF"]   # the GGUF repository of the model


def test_an_engine_without_tensor_parallelism_refuses_several_accelerators():
    spec = CATALOG.engines["llamacpp"]
    with pytest.raises(LightrailError, match="runs on one accelerator here"):
        engines.command_line(spec, "gpu", model="m", ref="a/b", ref_kind="hf", port=8000, tp=2, args=())
    _, argv = engines.command_line(CATALOG.engines["sglang"], "gpu", model="m", ref="a/b", ref_kind="hf", port=8000,
                                   tp=2, args=())
    assert "--tp=2" in argv


@pytest.mark.vllm
def test_the_picker_reads_metrics_the_real_vllm_exports(vllm_server):
    """The names Lightrail's catalog (and llm-d-router's built-in vllm map) score on exist in the
    pinned vLLM's /metrics."""
    text = httpx.get(vllm_server.metrics_url, timeout=10).text
    exported = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    metrics = CATALOG.engines["vllm"]["metrics"]
    for key in ("queued", "running", "kv_usage"):
        assert metrics[key] in exported, f"{metrics[key]} not in vLLM's /metrics"
