"""Validation can fail, for every schema source; realistic objects pass."""
import copy

import pytest

from lightrail.errors import LightrailError
from lightrail.settings import schemas_dir
from lightrail.validate import Problem, check, validate_objects, validate_values

SCHEMAS = schemas_dir()
needs_schemas = pytest.mark.skipif(SCHEMAS is None, reason="no upstream schemas: set LIGHTRAIL_SCHEMAS=DIR "
                                                           "(default ../shared/upstream beside the checkout)")

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "baseline-qwen", "namespace": "lightrail", "labels": {"app": "qwen"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "qwen"}},
             "template": {"metadata": {"labels": {"app": "qwen"}},
                          "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.26.0",
                                                   "args": ["--model=Qwen/Qwen2.5-3B-Instruct"],
                                                   "ports": [{"containerPort": 8000}],
                                                   "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}},
}
HTTPROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"parentRefs": [{"name": "baseline-gateway"}],
             "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                     "headers": [{"name": "X-Gateway-Model-Name", "value": "Qwen/Qwen2.5-3B-Instruct"}]}],
                        "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                         "name": "qwen"}]}]},
}
POOL = {
    "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
    "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"selector": {"matchLabels": {"app": "qwen"}}, "targetPorts": [{"number": 8000}],
             "endpointPickerRef": {"name": "qwen-epp", "port": {"number": 9002}}},
}
LLMISVC = {
    "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
    "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"model": {"uri": "hf://Qwen/Qwen2.5-3B-Instruct", "name": "Qwen/Qwen2.5-3B-Instruct"},
             "replicas": 3, "router": {"gateway": {}, "route": {}, "scheduler": {}}},
}
LWS = {
    "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
    "metadata": {"name": "moe", "namespace": "lightrail"},
    "spec": {"replicas": 1, "leaderWorkerTemplate": {
        "size": 2, "workerTemplate": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.26.0"}]}}}},
}
PODMONITOR = {
    "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "vllm"},
    "spec": {"selector": {"matchLabels": {"app": "qwen"}}, "podMetricsEndpoints": [{"port": "metrics"}]},
}
DESTINATIONRULE = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "epp"},
    "spec": {"host": "qwen-epp.lightrail.svc.cluster.local",
             "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}},
}
OBJECTIVE = {
    "apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceObjective", "metadata": {"name": "critical"},
    "spec": {"priority": 10, "poolRef": {"name": "qwen"}},
}
VALID = [DEPLOYMENT, HTTPROUTE, POOL, LLMISVC, LWS, PODMONITOR, DESTINATIONRULE, OBJECTIVE]


def _broken(obj, path, value):
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


DELETE = object()


@needs_schemas
@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_realistic_objects_pass(obj):
    assert validate_objects([obj]) == []


@needs_schemas
@pytest.mark.parametrize("obj,path,value,expected", [
    (DEPLOYMENT, ["spec", "template", "spec", "containers", 0, "bogus"], 1,
     "spec.template.spec.containers[0]: Additional properties are not allowed ('bogus' was unexpected)"),
    (DEPLOYMENT, ["spec", "replicas"], "2", "spec.replicas: '2' is not of type 'integer'"),
    (DEPLOYMENT, ["spec", "selector"], DELETE, "spec: 'selector' is a required property"),
    (HTTPROUTE, ["spec", "hostnamez"], ["a"], "spec: Additional properties are not allowed ('hostnamez'"),
    (POOL, ["spec", "selector"], DELETE, "spec: 'selector' is a required property"),
    (LLMISVC, ["spec", "replicas"], "three", "spec.replicas: 'three' is not of type 'integer'"),
    (LLMISVC, ["spec", "modle"], {}, "spec: Additional properties are not allowed ('modle' was unexpected)"),
    (LWS, ["spec", "leaderWorkerTemplate", "size"], "2", "spec.leaderWorkerTemplate.size: '2' is not of type 'integer'"),
    (PODMONITOR, ["spec", "podMetricsEndpoints", 0, "prot"], "x", "Additional properties are not allowed ('prot'"),
    (DESTINATIONRULE, ["spec", "trafficPolicy", "tls", "mode"], "SOMETIMES", "spec.trafficPolicy.tls.mode: 'SOMETIMES' is not one of"),
    (OBJECTIVE, ["spec", "poolRef"], DELETE, "spec: 'poolRef' is a required property"),
    (HTTPROUTE, ["metadata", "name"], "Not_A_Name", "metadata.name: 'Not_A_Name' does not match"),
    (HTTPROUTE, ["metadata", "labels"], {"a": 1}, "metadata.labels.a: 1 is not of type 'string'"),
])
def test_broken_objects_are_caught_for_each_schema_source(obj, path, value, expected):
    problems = validate_objects([_broken(obj, path, value)])
    assert problems, "a broken object passed validation"
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]
    assert problems[0].kind == obj["kind"] and problems[0].name == _broken(obj, path, value)["metadata"]["name"]


@needs_schemas
def test_v1alpha1_llminferenceservice_is_checked_against_its_own_version():
    v1 = dict(LLMISVC, apiVersion="serving.kserve.io/v1alpha1")
    assert validate_objects([v1]) == []
    assert validate_objects([_broken(v1, ["spec", "replicas"], "x")])


def test_kind_without_schema_is_an_error_not_a_pass():
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (problem,) = validate_objects([obj])
    assert "no schema for example.com/v1 Widget" in str(problem)


def test_custom_resource_without_schema_dir_names_the_setting(tmp_path):
    (problem,) = validate_objects([HTTPROUTE], schemas_dir=None) if SCHEMAS is None else \
        validate_objects([HTTPROUTE], schemas_dir=tmp_path)
    assert "no schema for gateway.networking.k8s.io/v1 HTTPRoute" in str(problem)


def test_not_an_object():
    (problem,) = validate_objects([{"kind": "Service"}])
    assert "needs apiVersion and kind" in str(problem)


def test_check_raises_with_every_problem():
    bad = [_broken(DEPLOYMENT, ["spec", "replicas"], "x"), {"apiVersion": "example.com/v1", "kind": "W",
                                                          "metadata": {"name": "w"}}]
    with pytest.raises(LightrailError) as err:
        check(bad)
    assert "2 invalid object(s)" in str(err.value) and "Deployment/baseline-qwen" in str(err.value)
    check([DEPLOYMENT])


@needs_schemas
def test_chart_values_are_checked_against_values_schemas():
    assert validate_values("llm-d-modelservice", {"modelArtifacts": {"uri": "hf://a/b", "name": "a/b"},
                                                  "multinode": False}) == []
    problems = validate_values("llm-d-modelservice", {"modelArtifacts": {"bogus": 1}, "multinode": "yes"})
    assert {str(p) for p in problems} == {
        "values/llm-d-modelservice: modelArtifacts: Additional properties are not allowed ('bogus' was unexpected)",
        "values/llm-d-modelservice: multinode: 'yes' is not of type 'boolean'",
    }
    assert "gateway: Additional properties are not allowed ('gatewayClass' was unexpected)" in \
        str(validate_values("llm-d-infra", {"gateway": {"gatewayClass": "istio"}})[0])
    assert validate_values("llm-d-router-gateway", {"anything": 1}) == []
    (missing,) = validate_values("llm-d-router-gateway", {}, required=True)
    assert "no values schema for chart llm-d-router-gateway" in str(missing)


def test_problem_str():
    assert str(Problem("Service", "s", "ns", "spec.ports[0].port", "bad")) == "Service/s: spec.ports[0].port: bad"
