"""Model aliases (`--alias NAME=MODEL`, docs/aliases.md): rendered with the real charts / kustomize
and validated against the real CRDs (InferenceModelRewrite from llm-d-router v0.10.0, KServe's
LLMInferenceService), refused where upstream cannot serve them, and checked by smoke."""
import json
import re

import httpx
import pytest

from lightrail.aliases import parse
from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.render import render_validated
from lightrail.settings import charts_dir, schemas_dir
from lightrail.smoke import checks
from lightrail.testing.vllm import VLLMServer
from tests.conftest import PHI, QWEN
from tests.test_smoke import by_name, serving, smoke_json

MODEL = "Qwen/Qwen2.5-3B-Instruct"
needs_upstream = pytest.mark.skipif(charts_dir() is None or schemas_dir() is None,
                                    reason="needs LIGHTRAIL_CHARTS and LIGHTRAIL_SCHEMAS (the pinned charts and CRDs)")


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@needs_upstream
@pytest.mark.parametrize("pattern,accel", [("baseline", "gpu"), ("caching", "sim"), ("moe", "gpu")])
def test_llmd_aliases_are_rewrites_on_the_model_pool(pattern, accel):
    plan = build_plan(Request(pattern, accel, "llmd", aliases=(("chat", plan_model(pattern, accel)),
                                                               ("assistant", plan_model(pattern, accel)))))
    result = render_validated(plan, charts=charts_dir(), schemas=schemas_dir())
    (rewrite,) = of_kind(result.objects, "InferenceModelRewrite")
    (pool,) = of_kind(result.objects, "InferencePool")
    (server,) = plan.servers
    assert rewrite["apiVersion"] == "llm-d.ai/v1alpha2" and rewrite["metadata"]["namespace"] == plan.namespace
    assert rewrite["spec"]["poolRef"] == {"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                          "name": pool["metadata"]["name"]}
    assert [(r["matches"][0]["model"]["value"], [t["modelRewrite"] for t in r["targets"]])
            for r in rewrite["spec"]["rules"]] == [("chat", [server.model]), ("assistant", [server.model])]
    assert rewrite["metadata"]["labels"]["lightrail.dev/pattern"] == pattern   # found by status and teardown
    assert plan.objects["InferenceModelRewrite"] == 1                          # what `invoke plan` shows


def plan_model(pattern, accel):
    return build_plan(Request(pattern, accel)).servers[0].model


@needs_upstream
@pytest.mark.parametrize("accel", ["gpu", "sim"])
def test_kserve_alias_is_the_model_name_and_the_id_keeps_answering(accel):
    model = plan_model("baseline", accel)
    plan = build_plan(Request("baseline", accel, "kserve", aliases=(("chat", model),)))
    (svc,) = of_kind(render_validated(plan, schemas=schemas_dir()).objects, "LLMInferenceService")
    assert svc["spec"]["model"]["name"] == "chat"
    args = svc["spec"]["template"]["containers"][0]["args"]
    names = args[len(args) - 1 - args[::-1].index("--served-model-name") + 1:][:3]   # the last flag wins
    assert names == ["chat", f"publishers/{plan.namespace}/models/chat", model]
    assert not of_kind(render_validated(plan, schemas=schemas_dir()).objects, "InferenceModelRewrite")


@pytest.mark.parametrize("request_kw, message", [
    ({"pattern": "multimodel", "aliases": (("chat", MODEL),)}, "body-based routing sets X-Gateway-Model-Name"),
    ({"pattern": "multimodel", "stack": "kserve", "aliases": (("chat", MODEL),)}, "an alias would match no route"),
    ({"stack": "kserve", "aliases": (("a", MODEL), ("b", MODEL))}, "KServe names a model once (spec.model.name)"),
    ({"stack": "kserve", "engine": "sglang", "aliases": (("a", MODEL),)}, "the engine serves one name"),
    ({"aliases": (("chat", "other/model"),)}, f"alias target 'other/model' is not served by this plan; valid: {MODEL}"),
    ({"aliases": (("chat", MODEL), ("chat", MODEL))}, "alias 'chat' is given twice"),
    ({"aliases": ((MODEL, MODEL),)}, "is already a served model name"),
])
def test_aliases_upstream_cannot_serve_are_refused_with_the_reason(request_kw, message):
    kw = {"pattern": "baseline", "accel": "gpu", **request_kw}
    with pytest.raises(LightrailError, match=re.escape(message)):
        build_plan(Request(**kw))


def test_the_passthrough_parser_cannot_rewrite(monkeypatch):
    """llm-d-router's passthrough parser does not read the body (it implements no ModelNameRewriter)."""
    from lightrail.catalog import load_catalog

    cat = load_catalog()
    monkeypatch.setitem(cat.engines, "sglang", {**cat.engines["sglang"], "parser": "passthrough"})
    with pytest.raises(LightrailError, match="passthrough parser does not read the body"):
        build_plan(Request("baseline", "gpu", engine="sglang", aliases=(("chat", MODEL),)), cat)


@pytest.mark.parametrize("value", ["chat", "=x/y", "chat=", "a b=x/y", "-x=a/b"])
def test_alias_flag_syntax(value):
    with pytest.raises(LightrailError, match="alias"):
        parse([value])


def answering(table):
    """A real HTTP server answering completions per requested model: {model: (answers as, text)}."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if asked["model"] not in table:
                self.send_response(404)
                self.end_headers()
                return
            model, text = table[asked["model"]]
            body = json.dumps({"model": model, "choices": [{"index": 0, "text": text}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return serving(Handler)


@pytest.mark.parametrize("table, ok, got", [
    ({QWEN: (QWEN, " jumps"), "chat": ("chat", " jumps")}, True, "chat: ' jumps'"),           # llmd: rewritten back
    ({QWEN: (QWEN, " jumps"), "chat": (QWEN, " jumps")}, True, f"{QWEN}: ' jumps'"),          # vLLM's first name
    ({QWEN: (QWEN, " jumps"), "chat": (PHI, " jumps")}, False, f"an answer from {PHI}"),      # routed elsewhere
    ({QWEN: (QWEN, " jumps"), "chat": ("chat", " sleeps")}, False, "chat: ' sleeps'"),        # another model's text
    ({QWEN: (QWEN, " jumps")}, False, "HTTP 404"),                                            # no such alias
])
def test_the_alias_check_needs_the_targets_own_answer(table, ok, got):
    with answering(table) as url, httpx.Client(base_url=url, timeout=10) as client:
        check = checks.alias(client, "chat", QWEN)
    assert check.ok is ok and check.got.startswith(got), check
    assert check.name == "alias chat"
    if "chat" in table:      # answered: compared with the target's own greedy text
        assert check.expected == f"{QWEN}'s greedy text ' jumps'" and check.detail == f"-> {QWEN}", check


@pytest.mark.vllm
def test_smoke_checks_an_alias_against_the_real_vllm(tiny_model):
    """vLLM serving an alias first and the model's id, as KServe's spec.model.name makes it (llmd's
    picker rewrite needs a cluster): the alias is the name every check sends, and it must give the
    id's greedy text."""
    with VLLMServer(tiny_model, QWEN, extra_args=("--served-model-name", "chat", QWEN),
                    startup_timeout=600) as server:
        code, report, proc = smoke_json("--pattern=baseline", "--stack=kserve", f"--url={server.url}",
                                         f"--alias=chat={QWEN}")
        assert code == 0, proc.stdout + proc.stderr
        assert report["models"] == ["chat"] and all(c["ok"] for c in report["checks"])
        assert by_name(report)["alias chat"]["detail"] == f"-> {QWEN}"
        code, report, _ = smoke_json("--pattern=baseline", "--stack=kserve", f"--url={server.url}",
                                     f"--alias=assistant={QWEN}")
        assert code == 1 and not by_name(report)["completion assistant"]["ok"]
