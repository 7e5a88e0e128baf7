"""Validation can fail, for every schema source; objects as users deploy them pass."""
import copy
import json
import os

import pytest
import yaml

from lightrail.errors import LightrailError
from lightrail.catalog import load_catalog
from lightrail.schemas import NoSchema, _parsed, crd_json_schema, k8s_version, object_validator
from lightrail.settings import TOOLS_SCHEMAS, schemas_dir
from lightrail.validate import Problem, check, validate_objects, validate_values

SCHEMAS = schemas_dir() if schemas_dir() and schemas_dir().is_dir() else None
needs_schemas = pytest.mark.skipif(SCHEMAS is None, reason="no upstream schemas: set LIGHTRAIL_SCHEMAS=DIR "
                                                           "(default ../shared/upstream beside the checkout)")
QWEN = "Qwen/Qwen2.5-3B-Instruct"
LABELS = {"app.kubernetes.io/managed-by": "lightrail", "lightrail.dev/pattern": "baseline"}

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "baseline-qwen", "namespace": "lightrail", "labels": {"app": "qwen", **LABELS}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "qwen"}},
             "template": {"metadata": {"labels": {"app": "qwen"}},
                          "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.26.0",
                                                   "args": [f"--model={QWEN}", "--enable-prefix-caching"],
                                                   "ports": [{"containerPort": 8000, "name": "http"}],
                                                   "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                                   "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}}},
}
SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"selector": {"app": "qwen"}, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]},
}
NETWORKPOLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "default-deny", "namespace": "lightrail"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
GATEWAYCLASS = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "istio"},
    "spec": {"controllerName": "istio.io/gateway-controller"},
}
GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
    "metadata": {"name": "baseline-gateway", "namespace": "lightrail"},
    "spec": {"gatewayClassName": "gke-l7-regional-external-managed",
             "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                            "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
}
HTTPROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"parentRefs": [{"name": "baseline-gateway"}],
             "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                     "headers": [{"name": "X-Gateway-Model-Name", "value": QWEN}]}],
                        "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                         "name": "qwen"}],
                        "timeouts": {"request": "300s"}}]},
}
POOL = {
    "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
    "metadata": {"name": "qwen", "namespace": "lightrail"},
    "spec": {"selector": {"matchLabels": {"app": "qwen"}}, "targetPorts": [{"number": 8000}],
             "endpointPickerRef": {"name": "qwen-epp", "port": {"number": 9002}}},
}
OBJECTIVE = {
    "apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceObjective", "metadata": {"name": "critical"},
    "spec": {"priority": 10, "poolRef": {"name": "qwen"}},
}
LWS = {
    "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
    "metadata": {"name": "moe", "namespace": "lightrail"},
    "spec": {"replicas": 1, "startupPolicy": "LeaderCreated", "leaderWorkerTemplate": {
        "size": 2, "restartPolicy": "RecreateGroupOnPodRestart",
        "workerTemplate": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.26.0",
                                                    "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}}},
}
LLMISVC = {
    "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
    "metadata": {"name": "qwen", "namespace": "lightrail", "labels": LABELS},
    "spec": {"model": {"uri": f"hf://{QWEN}", "name": QWEN}, "replicas": 3,
             "parallelism": {"tensor": 4},
             "template": {"containers": [{"name": "main", "resources": {"limits": {"google.com/tpu": "4"}}}]},
             "router": {"gateway": {}, "route": {}, "scheduler": {}}},
}
LLMISVC_CONFIG = {
    "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceServiceConfig",
    "metadata": {"name": "lightrail-tpu", "namespace": "lightrail"},
    "spec": {"template": {"nodeSelector": {"cloud.google.com/gke-tpu-topology": "2x2"},
                          "containers": [{"name": "main", "image": "docker.io/vllm/vllm-tpu:v0.26.0"}]}},
}
ENVOYFILTER = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
    "metadata": {"name": "bbr", "namespace": "istio-system"},
    "spec": {"configPatches": [{"applyTo": "HTTP_FILTER",
                                "match": {"context": "GATEWAY",
                                          "listener": {"filterChain": {"filter": {
                                              "name": "envoy.filters.network.http_connection_manager"}}}},
                                "patch": {"operation": "INSERT_FIRST",
                                          "value": {"name": "envoy.filters.http.ext_proc"}}}]},
}
DESTINATIONRULE = {
    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "epp"},
    "spec": {"host": "qwen-epp.lightrail.svc.cluster.local",
             "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}},
}
ISTIO_GATEWAY = {   # same kind name as Gateway API's Gateway, another group and schema
    "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "ingress"},
    "spec": {"selector": {"istio": "ingressgateway"},
             "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
}
PODMONITOR = {
    "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "vllm"},
    "spec": {"selector": {"matchLabels": {"app": "qwen"}}, "podMetricsEndpoints": [{"port": "http"}]},
}
SERVICEMONITOR = {
    "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "epp"},
    "spec": {"selector": {"matchLabels": {"app": "qwen-epp"}},
             "endpoints": [{"port": "metrics", "interval": "15s", "path": "/metrics"}]},
}
VALID = [DEPLOYMENT, SERVICE, NETWORKPOLICY, GATEWAYCLASS, GATEWAY, HTTPROUTE, POOL, OBJECTIVE, LWS, LLMISVC,
         LLMISVC_CONFIG, ENVOYFILTER, DESTINATIONRULE, ISTIO_GATEWAY, PODMONITOR, SERVICEMONITOR]
DELETE = object()


def _changed(obj, path, value):
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


def _ids(obj):
    return f"{obj['kind']}-{obj['apiVersion'].split('/')[-1]}"


@needs_schemas
@pytest.mark.parametrize("obj", VALID + [dict(LLMISVC, apiVersion="serving.kserve.io/v1alpha1"),
                                         dict(LLMISVC_CONFIG, apiVersion="serving.kserve.io/v1alpha1")], ids=_ids)
def test_realistic_objects_pass(obj):
    assert validate_objects([obj]) == []


@needs_schemas
def test_upstream_kserve_presets_pass():
    """KServe's own well-known LLMInferenceServiceConfig presets are valid against its own CRD."""
    presets = list(yaml.safe_load_all((SCHEMAS / "kserve-presets" / "llmisvcconfig-v0.20.0.yaml").read_text()))
    assert len(presets) == 10 and validate_objects(presets) == []


@needs_schemas
@pytest.mark.parametrize("obj,path,value,expected", [
    # built-in (kubernetes-validate, strict)
    (DEPLOYMENT, ["spec", "template", "spec", "containers", 0, "bogus"], 1,
     "spec.template.spec.containers[0]: Additional properties are not allowed ('bogus' was unexpected)"),
    (DEPLOYMENT, ["spec", "replicas"], "2", "spec.replicas: '2' is not of type 'integer'"),
    (DEPLOYMENT, ["spec", "selector"], DELETE, "spec: 'selector' is a required property"),
    (NETWORKPOLICY, ["spec", "policyTypes"], "Ingress", "spec.policyTypes: 'Ingress' is not of type 'array'"),
    # metadata, checked for every kind
    (DEPLOYMENT, ["metadata", "labels", "lightrail.dev/model"], QWEN,
     "metadata.labels.lightrail.dev/model: 'Qwen/Qwen2.5-3B-Instruct' is not a valid label value"),
    (SERVICE, ["metadata", "name"], "qwen2.5", "metadata.name: 'qwen2.5' is not a valid DNS-1035 label"),
    (HTTPROUTE, ["metadata", "name"], "Not_A_Name", "metadata.name: 'Not_A_Name' is not a valid DNS subdomain"),
    (HTTPROUTE, ["metadata", "labels"], {"a": 1}, "metadata.labels.a: 1 is not of type 'string'"),
    (POOL, ["metadata", "name"], DELETE, "metadata: 'name' is a required property"),
    (POOL, ["metadata", "namespace"], "Team_B", "metadata.namespace: 'Team_B' is not a valid DNS label"),
    (DEPLOYMENT, ["metadata", "labels"], {"not a key!": "x"}, "metadata.labels: 'not a key!' is not a valid key"),
    (OBJECTIVE, ["metadata", "annotations"], {"bad key!": "v"},
     "metadata.annotations: 'bad key!' is not a valid key"),
    (OBJECTIVE, ["metadata", "annotations"], {"ok": 1}, "metadata.annotations.ok: 1 is not of type 'string'"),
    # one CRD file each
    (HTTPROUTE, ["spec", "hostnamez"], ["a"], "spec: Additional properties are not allowed ('hostnamez'"),
    (GATEWAYCLASS, ["spec", "controllerName"], DELETE, "spec: 'controllerName' is a required property"),
    (GATEWAY, ["spec", "listeners"], [{"name": "http", "protocol": "HTTP", "port": p} for p in (80, 8080)],
     "spec.listeners: items 0 and 1 have the same name='http'"),
    (POOL, ["spec", "selector"], DELETE, "spec: 'selector' is a required property"),
    (OBJECTIVE, ["spec", "poolRef"], DELETE, "spec: 'poolRef' is a required property"),
    (LWS, ["spec", "leaderWorkerTemplate", "size"], "2",
     "spec.leaderWorkerTemplate.size: '2' is not of type 'integer'"),
    (LLMISVC, ["spec", "replicas"], "three", "spec.replicas: 'three' is not of type 'integer'"),
    (LLMISVC, ["spec", "modle"], {}, "spec: Additional properties are not allowed ('modle' was unexpected)"),
    (LLMISVC, ["spec", "parallelism", "expert"], "yes", "spec.parallelism.expert: 'yes' is not of type 'boolean'"),
    (LLMISVC_CONFIG, ["spec", "template", "containers", 0, "image"], 7,
     "spec.template.containers[0].image: 7 is not of type 'string'"),
    (ENVOYFILTER, ["spec", "configPatches", 0, "patch", "operation"], "PREPEND",
     "spec.configPatches[0].patch.operation: 'PREPEND' is not one of"),
    (DESTINATIONRULE, ["spec", "trafficPolicy", "tls", "mode"], "SOMETIMES",
     "spec.trafficPolicy.tls.mode: 'SOMETIMES' is not one of"),
    (ISTIO_GATEWAY, ["spec", "listeners"], [], "spec: Additional properties are not allowed ('listeners'"),
    (PODMONITOR, ["spec", "podMetricsEndpoints", 0, "prot"], "x", "Additional properties are not allowed ('prot'"),
    (SERVICEMONITOR, ["spec", "endpoints"], {"port": "metrics"},
     "spec.endpoints: {'port': 'metrics'} is not of type 'array'"),
], ids=lambda v: _ids(v) if isinstance(v, dict) and "kind" in v else None)
def test_broken_objects_are_caught_for_each_schema_source(obj, path, value, expected):
    broken = _changed(obj, path, value)
    problems = validate_objects([broken])
    assert problems, "a broken object passed validation"
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]
    meta = broken["metadata"]
    assert {(p.kind, p.name, p.namespace) for p in problems} == {(obj["kind"], meta.get("name", ""),
                                                                  meta.get("namespace", ""))}


@needs_schemas
def test_v1alpha1_llminferenceservice_is_checked_against_its_own_version():
    v1 = dict(LLMISVC, apiVersion="serving.kserve.io/v1alpha1")
    (problem,) = validate_objects([_changed(v1, ["spec", "replicas"], "x")])
    assert str(problem) == "LLMInferenceService/qwen: spec.replicas: 'x' is not of type 'integer'"


def test_every_problem_is_reported_not_just_the_first():
    broken = _changed(_changed(DEPLOYMENT, ["spec", "replicas"], "x"), ["spec", "paused"], "no")
    assert [p.path for p in validate_objects([broken, broken])] == ["spec.paused", "spec.replicas"] * 2


def test_kind_without_schema_is_an_error_not_a_pass():
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (problem,) = validate_objects([obj])
    assert str(problem).startswith("Widget/w: no schema for example.com/v1 Widget: not a built-in kind of "
                                   f"Kubernetes {k8s_version()} and ")
    if SCHEMAS:
        files = sum(1 for crd in load_catalog().versions["crds"].values() if crd.get("schema"))
        assert f"none of the {files} CRD files listed under `crds:` in patterns/versions.yaml defines it in " \
               f"{SCHEMAS}" in str(problem)


def test_core_group_kind_that_does_not_exist():
    (problem,) = validate_objects([{"apiVersion": "v1", "kind": "Podd", "metadata": {"name": "p"}}])
    assert str(problem) == f"Podd/p: no schema for v1 Podd: not a built-in kind of Kubernetes {k8s_version()}"


def test_custom_resources_without_a_schemas_dir_name_the_setting(tmp_path):
    with pytest.raises(NoSchema, match=r"and no CRD directory is set \(set LIGHTRAIL_SCHEMAS=DIR\)"):
        object_validator("gateway.networking.k8s.io/v1", "HTTPRoute", None)
    (problem,) = validate_objects([HTTPROUTE], schemas_dir=tmp_path / "absent")
    assert f"the CRD directory {tmp_path / 'absent'} does not exist (set LIGHTRAIL_SCHEMAS=DIR)" in str(problem)
    (problem,) = validate_objects([HTTPROUTE], schemas_dir=tmp_path)
    assert "(missing: crds/gateway-api-standard-v1.6.1.yaml, " in str(problem)
    assert validate_objects([DEPLOYMENT], schemas_dir=tmp_path) == []   # built-ins need no directory


@needs_schemas
def test_versions_that_a_crd_does_not_define_or_serve():
    (missing,) = validate_objects([dict(HTTPROUTE, apiVersion="gateway.networking.k8s.io/v2")])
    assert "crds/gateway-api-standard-v1.6.1.yaml defines HTTPRoute in versions v1, v1beta1, not v2" in str(missing)
    # the standard channel (listed first, installed by prereqs) no longer serves TCPRoute v1alpha2
    tcp = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute", "metadata": {"name": "t"},
           "spec": {"rules": [{"backendRefs": [{"name": "s", "port": 80}]}]}}
    (unserved,) = validate_objects([tcp])
    assert "version v1alpha2 of TCPRoute is not served by crds/gateway-api-standard-v1.6.1.yaml (served: v1)" \
        in str(unserved)
    assert validate_objects([dict(tcp, apiVersion="gateway.networking.k8s.io/v1")]) == []


def test_not_an_object():
    (problem,) = validate_objects([{"kind": "Service"}])
    assert problem == Problem("?", "", "", "", "not a Kubernetes object (needs apiVersion and kind): {'kind': 'Service'}")
    (long,) = validate_objects([{"kind": "x" * 200}])
    assert long.message.endswith(": {'kind': '" + "x" * 70)   # the object quoted up to 80 characters
    (problem,) = validate_objects([{"apiVersion": "v1", "kind": "ConfigMap", "data": {}}])
    assert str(problem) == "ConfigMap: 'metadata' is a required property"


@needs_schemas
def test_check_raises_with_every_problem():
    bad = [_changed(DEPLOYMENT, ["spec", "replicas"], "x"), _changed(DEPLOYMENT, ["spec", "paused"], "x"),
           {"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w"}}]
    with pytest.raises(LightrailError) as err:
        check(bad)
    lines = str(err.value).splitlines()
    assert lines[0] == "3 problem(s) in 2 invalid object(s):"
    assert lines[1].startswith("  Deployment/baseline-qwen: spec.replicas: 'x' is not of type 'integer'")
    assert lines[2].startswith("  Deployment/baseline-qwen: spec.paused: 'x' is not of type 'boolean'")
    assert lines[3].startswith("  W/w: no schema for example.com/v1 W")
    check(VALID)


@needs_schemas
def test_chart_values_are_checked_against_values_schemas():
    assert validate_values("llm-d-modelservice", {"modelArtifacts": {"uri": f"hf://{QWEN}", "name": QWEN},
                                                  "multinode": False, "decode": {"replicas": 3}}) == []
    problems = validate_values("llm-d-modelservice", {"modelArtifacts": {"bogus": 1}, "multinode": "yes"})
    assert problems[1] == Problem("values", "llm-d-modelservice", "", "multinode", "'yes' is not of type 'boolean'")
    assert [str(p) for p in problems] == [
        "values/llm-d-modelservice: modelArtifacts: Additional properties are not allowed ('bogus' was unexpected)",
        "values/llm-d-modelservice: multinode: 'yes' is not of type 'boolean'",
    ]
    assert validate_values("llm-d-infra", {"gateway": {"gatewayClassName": "istio"}}) == []
    assert [str(p) for p in validate_values("llm-d-infra", {"gateway": {"gatewayClass": "istio"}})] == [
        "values/llm-d-infra: gateway: Additional properties are not allowed ('gatewayClass' was unexpected)"]


def test_chart_without_a_values_schema_is_reported_only_when_strict(tmp_path):
    assert validate_values("llm-d-router-gateway", {"anything": 1}) == []
    (missing,) = validate_values("llm-d-router-gateway", {}, strict=True)
    assert (missing.kind, missing.name, missing.namespace, missing.path) == ("values", "llm-d-router-gateway", "", "")
    assert str(missing) == ("values/llm-d-router-gateway: no values schema for chart llm-d-router-gateway "
                            "(none listed under `chart-schemas:` in patterns/versions.yaml)")
    # a schema that is listed but absent is never a silent pass
    (absent,) = validate_values("llm-d-modelservice", {}, schemas_dir=tmp_path)
    assert (absent.namespace, absent.path) == ("", "")
    assert str(absent) == (f"values/llm-d-modelservice: values schema chart-schemas/llm-d-modelservice-v0.4.12"
                           f".values.schema.json for chart llm-d-modelservice not found in {tmp_path} "
                           "(set LIGHTRAIL_SCHEMAS=DIR)")


def test_problem_str():
    assert str(Problem("Service", "s", "ns", "spec.ports[0].port", "bad")) == "Service/s: spec.ports[0].port: bad"
    assert str(Problem("Widget", "", "", "", "no schema")) == "Widget: no schema"


# --- the CRD -> JSON Schema conversion, on small schemas --------------------------------------


def _crd_errors(openapi, spec):
    import jsonschema
    schema = crd_json_schema({"type": "object", "properties": {"spec": openapi}})
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(
        {"apiVersion": "x/v1", "kind": "X", "metadata": {}, "spec": spec})]


def test_conversion_rejects_unknown_fields_unless_preserved():
    closed = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert _crd_errors(closed, {"a": "x", "b": 1}) == ["Additional properties are not allowed ('b' was unexpected)"]
    assert _crd_errors({**closed, "x-kubernetes-preserve-unknown-fields": True}, {"a": "x", "b": 1}) == []
    assert _crd_errors({**closed, "additionalProperties": {"type": "integer"}}, {"b": 1}) == []
    # an object schema that names no fields keeps none (the API server prunes them all)
    assert _crd_errors({"type": "object"}, {"b": 1}) == ["Additional properties are not allowed ('b' was unexpected)"]


def test_conversion_of_kubernetes_extensions():
    ios = {"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": True}}}
    assert _crd_errors(ios, {"port": 80}) == _crd_errors(ios, {"port": "http"}) == []
    assert _crd_errors(ios, {"port": 1.5})
    nullable = {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}}
    assert _crd_errors(nullable, {"n": None}) == [] and _crd_errors(nullable, {"n": "1"})
    embedded = {"type": "object", "properties": {"template": {
        "type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}}}}
    assert _crd_errors(embedded, {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}}) == []
    assert _crd_errors(embedded, {"template": {"status": {}}})
    sets = {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
    assert _crd_errors(sets, ["a", "a"]) == ["['a', 'a'] has non-unique elements"]
    exclusive = {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert _crd_errors(exclusive, 0) == ["0 is less than or equal to the minimum of 0"]


def test_crd_files_are_parsed_once_and_cached_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "spec": {"group": "x.io", "names": {"kind": "X"}, "versions": [{"name": "v1"}]}}
    src = tmp_path / "crds.yaml"
    src.write_text(yaml.safe_dump_all([crd, {"kind": "Namespace"}]))
    assert _parsed(src) == [crd]
    (cached,) = (tmp_path / "cache" / "lightrail" / "schemas").glob("*.json")
    crd["spec"]["names"]["kind"] = "Y"          # a changed file replaces its cache entry
    src.write_text(yaml.safe_dump(crd))
    os.utime(src, ns=(1, 1))
    assert _parsed(src) == [crd]
    (recached,) = (tmp_path / "cache" / "lightrail" / "schemas").glob("*.json")
    assert recached != cached and _parsed(src) == [crd]
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-cache-here")   # an unwritable cache only costs time
    assert _parsed(src) == [crd]


@needs_schemas
@pytest.mark.parametrize("stack", ["kserve", "llmd"])
def test_integer_formats_are_bounded_as_the_api_server_decodes_them(stack):
    """`replicas: 99999999999` is an integer, but no int32: the API server rejects it, so must we."""
    from lightrail.plan import Request, build_plan
    from lightrail.render import render
    from lightrail.settings import charts_dir

    if stack == "llmd" and charts_dir() is None:
        pytest.skip("needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
    objects = render(build_plan(Request("baseline", "gpu", stack)), charts=charts_dir()).objects
    (workload,) = [o for o in objects if o["kind"] in ("Deployment", "LLMInferenceService")
                   and "epp" not in o["metadata"]["name"]]
    for replicas, ok in ((2**31 - 1, True), (2**31, False), (99999999999, False), (-2**31 - 1, False)):
        obj = copy.deepcopy(workload)
        obj["spec"]["replicas"] = replicas
        problems = validate_objects([obj], schemas_dir=SCHEMAS)
        if ok:
            assert problems == []
        else:
            assert ("spec.replicas", f"{replicas} does not fit int32 (the API server accepts -2147483648 to 2147483647)") \
                in [(p.path, p.message) for p in problems]


def test_int64_fields_are_bounded_too():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "lightrail"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 2**63}}
    (problem,) = validate_objects([pod])
    assert problem.path == "spec.terminationGracePeriodSeconds" and "does not fit int64" in problem.message
    pod["spec"]["terminationGracePeriodSeconds"] = 2**63 - 1
    assert validate_objects([pod]) == []


# ---------------------------------------------------------------------------------------------
# Grafana dashboards (ConfigMaps labelled grafana_dashboard=1): the real dashboard schema of the
# schemaVersion each declares, as scripts/setup installs it from @grafana/schema

DASHBOARD_VERSION = load_catalog().versions["grafana-dashboard"]["schemaVersion"]
needs_dashboard_schema = pytest.mark.skipif(
    not (TOOLS_SCHEMAS / f"grafana-dashboard-v{DASHBOARD_VERSION}.json").exists(),
    reason="the Grafana dashboard schema is not installed: run scripts/setup (needs Node and npm)")


def dashboard_map(board) -> dict:
    text = board if isinstance(board, str) else json.dumps(board)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "baseline-dashboard", "namespace": "lightrail", "labels": {"grafana_dashboard": "1"}},
            "data": {"board.json": text}}


def generated_dashboard() -> dict:
    from lightrail.monitoring import dashboard
    from lightrail.plan import Request, build_plan

    return dashboard(build_plan(Request("multimodel", "sim", "kserve", monitoring="prometheus")))


@needs_dashboard_schema
def test_generated_dashboard_passes_the_grafana_schema():
    assert generated_dashboard()["schemaVersion"] == DASHBOARD_VERSION
    assert validate_objects([dashboard_map(generated_dashboard())]) == []


@needs_dashboard_schema
@pytest.mark.parametrize("path, value, expected", [
    (["panels", 1, "gridPos", "w"], "8", "panels[1].gridPos.w: '8' is not of type 'number'"),
    (["panels", 0, "collapsed"], "no", "panels[0].collapsed: 'no' is not of type 'boolean'"),
    (["panels", 1, "targets"], {"refId": "A"}, "panels[1].targets: {'refId': 'A'} is not of type 'array'"),
    (["panels", 1, "fieldConfig", "defaults", "thresholds", "mode"], "relative",
     "panels[1].fieldConfig.defaults.thresholds.mode: 'relative' is not one of ['absolute', 'percentage']"),
    (["graphTooltip"], 3, "graphTooltip: 3 is not one of [1, 0, 2]"),
    (["refresh"], False, "refresh: False is not of type 'string'"),
    (["timezone_name"], "utc", "Additional properties are not allowed ('timezone_name' was unexpected)"),
    # a panel's options and custom field config: its plugin's types (timeseries)
    (["panels", 1, "options", "legend", "placement"], "top",
     "panels[1].options.legend.placement: 'top' is not one of ['bottom', 'right']"),
    (["panels", 1, "options", "tooltip", "sort"], "up",
     "panels[1].options.tooltip.sort: 'up' is not one of ['asc', 'desc', 'none']"),
    (["panels", 1, "options", "legend", "showLegend"], "yes",
     "panels[1].options.legend.showLegend: 'yes' is not of type 'boolean'"),
    (["panels", 1, "fieldConfig", "defaults", "custom", "thresholdsStyle", "mode"], "lines",
     "panels[1].fieldConfig.defaults.custom.thresholdsStyle.mode: 'lines' is not one of "
     "['area', 'dashed', 'dashed+area', 'line', 'line+area', 'off', 'series']"),
    (["panels", 1, "fieldConfig", "defaults", "custom", "lineWidth"], "2",
     "panels[1].fieldConfig.defaults.custom.lineWidth: '2' is not of type 'number'"),
])
def test_a_dashboard_the_grafana_schema_refuses_is_a_problem(path, value, expected):
    board = generated_dashboard()
    parent = board
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    (problem,) = validate_objects([dashboard_map(board)])
    assert (problem.kind, problem.name) == ("ConfigMap", "baseline-dashboard")
    assert f"{problem.path}: {problem.message}".startswith("data[board.json]")
    assert f"{problem.path}: {problem.message}".endswith(expected), str(problem)


@needs_dashboard_schema
def test_a_panel_is_checked_by_its_plugin_also_inside_a_collapsed_row():
    board = generated_dashboard()
    inner = copy.deepcopy(board["panels"][1])
    del inner["options"]["tooltip"]
    board["panels"].append({"type": "row", "id": 99, "title": "more", "collapsed": True, "panels": [inner]})
    (problem,) = validate_objects([dashboard_map(board)])
    assert problem.path == f"data[board.json].panels[{len(board['panels']) - 1}].panels[0].options"
    assert problem.message == "'tooltip' is a required property"


@needs_dashboard_schema
def test_a_panel_type_without_an_installed_schema_is_a_problem_naming_it():
    board = generated_dashboard()
    board["panels"][1]["type"] = "graph"
    (problem,) = validate_objects([dashboard_map(board)])
    assert problem.path == "data[board.json].panels[1].type"
    assert problem.message.startswith(f"no schema for panel type 'graph' of schemaVersion {DASHBOARD_VERSION}: "
                                      f"{TOOLS_SCHEMAS}/grafana-dashboard-v{DASHBOARD_VERSION}-graph.json is not installed")


def test_a_dashboard_without_a_schema_for_its_version_is_a_problem_naming_it():
    (problem,) = validate_objects([dashboard_map({**generated_dashboard(), "schemaVersion": 7})])
    assert problem.path == "data[board.json]"
    assert problem.message == (f"no schema for Grafana dashboard schemaVersion 7: {TOOLS_SCHEMAS}/grafana-dashboard-v7"
                               ".json is not installed (scripts/setup installs the one pinned in "
                               "patterns/versions.yaml `grafana-dashboard:`)")


@pytest.mark.parametrize("text, expected", [
    ("{", "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ('{"title": "x"}', "a Grafana dashboard declares its schemaVersion (an integer), not None"),
    ('{"schemaVersion": "42"}', "a Grafana dashboard declares its schemaVersion (an integer), not '42'"),
])
def test_a_dashboard_that_is_no_json_or_declares_no_version_is_a_problem(text, expected):
    (problem,) = validate_objects([dashboard_map(text)])
    assert problem.message == expected


def test_configmaps_without_the_dashboard_label_are_not_read_as_dashboards():
    plain = dashboard_map("{")
    plain["metadata"]["labels"] = {"grafana_dashboard": "0"}
    assert validate_objects([plain]) == []
