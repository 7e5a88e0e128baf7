"""Model weights (`--weights`, `--cache-size`, docs/weights.md): every source renders with the real
charts / kustomize and validates against the real schemas on both stacks, or is refused with the
reason; doctor refuses claims the pods cannot share; teardown keeps claims unless asked."""
import inspect
import re

import pytest

from lightrail.errors import LightrailError
from lightrail.ops import checks as ck
from lightrail.plan import Request, build_plan
from lightrail.render import render_validated
from lightrail.settings import charts_dir, schemas_dir

MODEL = "Qwen/Qwen2.5-3B-Instruct"
IMAGE = "registry.example.com/models/qwen2-5-3b:1"
needs_upstream = pytest.mark.skipif(charts_dir() is None or schemas_dir() is None,
                                    reason="needs LIGHTRAIL_CHARTS and LIGHTRAIL_SCHEMAS (the pinned charts and CRDs)")


def llmd(pattern="baseline", accel="gpu", **kw):
    plan = build_plan(Request(pattern, accel, "llmd", **kw))
    return plan, render_validated(plan, charts=charts_dir(), schemas=schemas_dir()).objects


def model_pod(objects):
    (dep,) = [o for o in objects if o["kind"] == "Deployment" and "llm-d.ai/inference-serving"
              in o["spec"]["template"]["metadata"]["labels"]]
    spec = dep["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "model-storage")
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model-storage")
    return volume, mount, container


@needs_upstream
@pytest.mark.parametrize("accel, size", [("gpu", "24Gi"), ("cpu", "16Gi")])
def test_hf_download_volume_is_sized_never_the_charts_5Mi(accel, size):
    _, objects = llmd(accel=accel)
    volume, mount, _ = model_pod(objects)
    assert volume["emptyDir"] == {"sizeLimit": size} and mount["mountPath"] == "/model-cache"
    _, objects = llmd(accel=accel, cache_size="100Gi")
    assert model_pod(objects)[0]["emptyDir"] == {"sizeLimit": "100Gi"}


@needs_upstream
@pytest.mark.parametrize("pattern, replicas, mode", [("baseline", None, "ReadWriteOnce"), ("caching", None, "ReadWriteMany"),
                                                      ("baseline", 2, "ReadWriteMany")])
def test_pvc_is_a_hugging_face_cache_on_a_claim_lightrail_keeps(pattern, replicas, mode):
    plan, objects = llmd(pattern, weights="pvc", cache_size="80Gi", replicas=replicas)
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    server = plan.servers[0]
    assert claim["metadata"]["name"] == f"{server.name}-weights"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"     # helm uninstall leaves it
    assert claim["metadata"]["labels"]["lightrail.dev/pattern"] == pattern            # teardown finds it (and keeps it)
    assert claim["spec"] == {"accessModes": [mode], "resources": {"requests": {"storage": "80Gi"}}}
    volume, mount, container = model_pod(objects)
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": False}
    assert not mount.get("readOnly")
    assert {"name": "HF_HUB_CACHE", "value": "/model-cache/hub"} in container["env"]
    assert container["args"][0] == MODEL                          # vLLM downloads the id into the cache
    assert plan.objects["PersistentVolumeClaim"] == 1


@needs_upstream
@pytest.mark.parametrize("weights, path", [("pvc:models", MODEL), ("pvc:models/qwen/3b", "qwen/3b")])
def test_existing_claim_is_mounted_read_only_and_served_from_its_path(weights, path):
    _, objects = llmd(weights=weights)
    volume, mount, container = model_pod(objects)
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True} and mount["readOnly"] is True
    assert container["args"][0] == f"/model-cache/{path}"
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


@needs_upstream
def test_oci_weights_are_an_image_volume_in_model_car_layout():
    _, objects = llmd(weights=f"oci:{IMAGE}")
    volume, mount, container = model_pod(objects)
    assert volume["image"] == {"reference": IMAGE, "pullPolicy": "Always"} and mount["readOnly"] is True
    assert container["args"][0] == "/model-cache/models"


@needs_upstream
def test_other_engines_load_from_the_claim_too():
    _, objects = llmd(accel="cpu", engine="llamacpp", weights="pvc:gguf/qwen.gguf")
    _, _, container = model_pod(objects)
    assert container["args"][:2] == ["-m", "/model-cache/qwen.gguf"]


@needs_upstream
@pytest.mark.parametrize("weights, uri", [("hf", f"hf://{MODEL}"), ("pvc:models", f"pvc://models/{MODEL}"),
                                          (f"oci:{IMAGE}", f"oci://{IMAGE}")])
def test_kserve_model_uri_per_source(weights, uri):
    plan = build_plan(Request("caching", "gpu", "kserve", weights=weights))
    objects = render_validated(plan, schemas=schemas_dir()).objects
    (svc,) = [o for o in objects if o["kind"] == "LLMInferenceService"]
    assert svc["spec"]["model"]["uri"] == uri
    policies = {o["metadata"]["name"].removeprefix(plan.servers[0].name + "-") for o in objects if o["kind"] == "NetworkPolicy"}
    assert ("allow-weights-download" in policies) == (weights == "hf")     # only a download goes out to Hugging Face
    assert plan.servers[0].weights.cache is None                            # KServe sizes its own volume


@pytest.mark.parametrize("kw, message", [
    ({"stack": "kserve", "weights": "pvc"}, "KServe reads pvc:// claims that hold the weights already"),
    ({"stack": "kserve", "cache_size": "10Gi"}, "--cache-size applies to --stack=llmd only"),
    ({"weights": "pvc:models", "cache_size": "10Gi"}, "brings its own storage"),
    ({"pattern": "multimodel", "weights": f"oci:{IMAGE}"}, "this plan serves 2 models; valid: --weights=pvc:CLAIM"),
    ({"pattern": "multimodel", "weights": "pvc:models/qwen"}, "names one model's weights"),
    ({"accel": "sim", "weights": "pvc"}, "the simulator loads no weights"),
    ({"models": ("/models/qwen",), "weights": "pvc:models"}, "is a path inside the image"),
    ({"weights": "s3://bucket"}, "valid: hf, pvc, pvc:CLAIM[/PATH], oci:IMAGE"),
    ({"weights": "oci:"}, "valid: hf, pvc, pvc:CLAIM[/PATH], oci:IMAGE"),
    ({"weights": "pvc:Bad_Claim"}, "is not a Kubernetes name"),
    ({"weights": "pvc:models/../etc"}, "must stay inside the claim"),
    ({"cache_size": "5"}, "valid: a whole number of Mi, Gi or Ti"),
    ({"engine": "trtllm", "weights": "pvc:models"}, "names the model by what it loads"),
])
def test_weights_upstream_cannot_use_are_refused_with_the_reason(kw, message):
    kw = {"pattern": "baseline", "accel": "gpu", **kw}
    with pytest.raises(LightrailError, match=re.escape(message)):
        build_plan(Request(**kw))


def claim(name, *modes):
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "lightrail"},
            "spec": {"accessModes": list(modes)}}


@pytest.mark.parametrize("replicas, claims, status, detail", [
    (2, [claim("models", "ReadWriteOnce")], ck.FAIL, "mounts on one node, and the 2 pods may land on several"),
    (2, [claim("models", "ReadWriteOncePod")], ck.FAIL, "mounts on one node"),
    (2, [claim("models", "ReadOnlyMany")], ck.OK, "ReadOnlyMany, 2 pod(s)"),
    (1, [claim("models", "ReadWriteOnce")], ck.OK, "ReadWriteOnce, 1 pod(s)"),
    (1, [], ck.FAIL, "claim models not found in namespace lightrail"),
])
def test_doctor_refuses_a_claim_the_pods_cannot_share(replicas, claims, status, detail):
    plan = build_plan(Request("baseline", "gpu", weights="pvc:models", replicas=replicas))
    (check,) = ck.weights_checks(plan, claims)
    assert check.status == status and detail in check.detail, check


def test_teardown_keeps_model_claims_unless_asked():
    from lightrail.cli import ops

    assert inspect.signature(ops.teardown.body).parameters["keep_pvcs"].default is True
