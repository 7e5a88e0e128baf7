"""TLS ingress: the HTTPS listener each stack renders (validated against the Gateway API and KServe
CRDs), and the refusals, each naming why."""
from __future__ import annotations

import pytest

from lightrail.errors import LightrailError
from lightrail.plan import Request, build_plan
from lightrail.render import render_validated
from lightrail.settings import charts_dir


def rendered(pattern: str, stack: str, **tls):
    if stack == "llmd" and charts_dir() is None:
        pytest.skip("rendering the llmd stack needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
    plan = build_plan(Request(pattern, "sim", stack, **tls))
    objects = render_validated(plan, charts=charts_dir()).objects
    counted = {}
    for o in objects:
        counted[o["kind"]] = counted.get(o["kind"], 0) + 1
    assert counted == plan.objects   # the units predict the HTTPS Gateway too
    return plan, objects


@pytest.mark.parametrize("stack", ["llmd", "kserve"])
def test_a_tls_secret_becomes_the_one_https_listener_of_the_deployments_gateway(stack):
    plan, objects = rendered("caching", stack, tls_secret="llm-cert", hostname="llm.example.com")
    gateways = [o for o in objects if o["kind"] == "Gateway"]
    (gateway,) = gateways
    assert gateway["metadata"]["name"] == plan.gateway.name and gateway["metadata"]["namespace"] == plan.namespace
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["hostname"]) == ("HTTPS", 443, "llm.example.com")
    assert listener["tls"] == {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "llm-cert"}]}
    assert "cert-manager.io/issuer" not in (gateway["metadata"].get("annotations") or {})
    if stack == "kserve":   # KServe's routes attach to it, not to its shared kserve-ingress-gateway
        for isvc in (o for o in objects if o["kind"] == "LLMInferenceService"):
            assert isvc["spec"]["router"]["gateway"] == {"refs": [{"name": plan.gateway.name,
                                                                  "namespace": plan.namespace}]}


@pytest.mark.parametrize("stack", ["llmd", "kserve"])
def test_cert_manager_issues_the_secret_the_listener_names(stack):
    plan, objects = rendered("baseline", stack, cert_manager_issuer="letsencrypt", hostname="*.example.com")
    (gateway,) = [o for o in objects if o["kind"] == "Gateway"]
    assert gateway["metadata"]["annotations"]["cert-manager.io/issuer"] == "letsencrypt"
    (listener,) = gateway["spec"]["listeners"]
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": f"{plan.gateway.name}-tls"}]
    assert plan.to_dict()["tls"] == {"secret": "baseline-gateway-tls", "issuer": "letsencrypt",
                                     "hostname": "*.example.com"}


def test_without_tls_nothing_changes():
    plan = build_plan(Request("baseline", "sim", "kserve"))
    assert plan.tls is None and plan.to_dict()["tls"] is None
    assert not any(u.name == "gateway" for u in plan.units)


@pytest.mark.parametrize("request_, message", [
    (Request("baseline", "sim", tls_secret="a", cert_manager_issuer="b", hostname="x.io"), "not both"),
    (Request("baseline", "sim", tls_secret="a"), "--hostname is required here: llm-d-infra v1.4.0 writes"),
    (Request("baseline", "sim", "kserve", cert_manager_issuer="le"),
     "--hostname is required here: cert-manager issues certificates for the listener's hostname"),
    (Request("baseline", "sim", hostname="x.io"), "give --tls-secret=NAME or --cert-manager-issuer=NAME too"),
    (Request("baseline", "sim", tls_secret="Bad_Name", hostname="x.io"), "--tls-secret 'Bad_Name' is not a valid"),
    (Request("baseline", "sim", tls_secret="c", hostname="https://x.io"), "--hostname 'https://x.io' is not a DNS name"),
    (Request("multimodel", "sim", "kserve", tls_secret="c"), "TLS ingress for multimodel on kserve is not built"),
])
def test_tls_input_is_refused_naming_why(request_, message):
    with pytest.raises(LightrailError, match=None) as err:
        build_plan(request_)
    assert message in str(err.value)
