"""--monitoring=prometheus: the rendered scrape targets, alerts and dashboard, on both stacks, checked by real tools.

The PrometheusRule is taken from the real render (helm on llmd, kustomize on kserve) and handed to
the pinned promtool: `check rules`, then `test rules` with series that make each alert fire and
series that keep it silent. The dashboard's queries are parsed by promtool too (its JSON is checked
against Grafana's schema by validation: tests/test_validate.py). The vLLM metric names are held to
a real vLLM's /metrics.
"""
from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
import yaml

from lightrail import monitoring
from lightrail.plan import Request, build_plan
from lightrail.render import render_validated
from lightrail.settings import TOOLS_BIN, charts_dir

PROMTOOL = TOOLS_BIN / "promtool"
needs_promtool = pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool is not built: run "
                                    "scripts/build_control_plane.py go-tools promtool (needs Go)")
ALERTS = ["LightrailEPPErrorRatioCritical", "LightrailEPPErrorRatioWarning", "LightrailNoReadyEndpoints",
          "LightrailEPPMetricsAbsent", "LightrailModelServerMetricsAbsent", "LightrailQueueDepthHigh",
          "LightrailKVCacheUsageHigh", "LightrailPreemptions", "LightrailTTFTHigh"]


def rendered(pattern: str, stack: str, accel: str = "sim"):
    if stack == "llmd" and charts_dir() is None:
        pytest.skip("rendering the llmd stack needs the upstream charts: set LIGHTRAIL_CHARTS=DIR")
    plan = build_plan(Request(pattern, accel, stack, monitoring="prometheus"))
    return plan, render_validated(plan, charts=charts_dir()).objects


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("stack", ["llmd", "kserve"])
def test_every_model_server_and_picker_is_scraped_and_alerted_on(stack):
    plan, objects = rendered("multimodel", stack)
    assert dict(plan.units[-1].objects) == {"PrometheusRule": 1, "ConfigMap": 1} if stack == "llmd" else {
        "PodMonitor": 2 * len(plan.servers), "PrometheusRule": 1, "ConfigMap": 1}
    counted = {}
    for o in objects:
        counted[o["kind"]] = counted.get(o["kind"], 0) + 1
    assert counted == plan.objects   # the units predict what the charts / kustomize render
    (rule,) = of_kind(objects, "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == [f"lightrail-lightrail-{s.name}" for s in plan.servers]
    for group in rule["spec"]["groups"]:
        assert [r["alert"] for r in group["rules"]] == ALERTS
    monitors = of_kind(objects, "PodMonitor") + of_kind(objects, "ServiceMonitor")
    assert len(monitors) == 2 * len(plan.servers) and all(m["metadata"]["namespace"] == plan.namespace for m in monitors)


def test_llmd_monitors_select_the_rendered_pods_and_ports():
    """The modelservice PodMonitor selects the vLLM pods by labels they carry, on the port named
    `metrics`; the router's ServiceMonitor selects the picker's Service by its labels and port."""
    plan, objects = rendered("baseline", "llmd")
    (pod_monitor,) = of_kind(objects, "PodMonitor")
    (service_monitor,) = of_kind(objects, "ServiceMonitor")
    server = next(d for d in of_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-decode"))
    template = server["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
    service = next(s for s in of_kind(objects, "Service")
                   if s["metadata"]["labels"].items() >= service_monitor["spec"]["selector"]["matchLabels"].items())
    (scrape,) = service_monitor["spec"]["endpoints"]
    assert scrape["port"] in {p["name"] for p in service["spec"]["ports"]}
    token = scrape["authorization"]["credentials"]["name"]
    assert token in {s["metadata"]["name"] for s in of_kind(objects, "Secret")}   # the chart's metrics-reader token


def test_kserve_picker_serves_metrics_without_a_token_when_scraped():
    plan, objects = rendered("baseline", "kserve")
    (isvc,) = of_kind(objects, "LLMInferenceService")
    command = isvc["spec"]["router"]["scheduler"]["template"]["containers"][0]["command"]
    assert "--metrics-endpoint-auth=false" in command
    plain = build_plan(Request("baseline", "sim", "kserve"))
    assert "--metrics-endpoint-auth=false" not in render_validated(plain).objects[-1]["spec"]["router"][
        "scheduler"]["template"]["containers"][0]["command"]


# ---------------------------------------------------------------------------------------------
# the Grafana dashboard


def rendered_dashboard(objects: list[dict]) -> tuple[dict, dict]:
    (board,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    (text,) = board["data"].values()
    return board, json.loads(text)


@pytest.mark.parametrize("stack", ["llmd", "kserve"])
def test_dashboard_has_a_row_per_model_server_scoped_like_its_alerts(stack):
    plan, objects = rendered("multimodel", stack)
    board, dashboard = rendered_dashboard(objects)
    assert board["data"] == monitoring.dashboard_configmap(plan)["data"]   # helm / kustomize keep the text as is
    assert board["metadata"]["namespace"] == plan.namespace
    assert board["metadata"]["labels"]["lightrail.dev/pattern"] == "multimodel"   # stamped like every object
    assert dashboard["schemaVersion"] == plan.versions["grafana-dashboard"]["schemaVersion"]
    assert len(dashboard["uid"]) <= 40 and dashboard["title"] == f"Lightrail multimodel ({plan.namespace})"
    rows = [i for i, p in enumerate(dashboard["panels"]) if p["type"] == "row"]
    assert [dashboard["panels"][i]["title"] for i in rows] == [f"{s.name}: {s.model}" for s in plan.servers]
    assert len(dashboard["panels"]) == len(plan.servers) * (1 + len(monitoring.PANELS))
    for server, start in zip(plan.servers, rows):
        own = monitoring.selectors(plan, server)
        others = [v for s in plan.servers if s != server for v in monitoring.selectors(plan, s).values()]
        for panel in dashboard["panels"][start + 1:start + 1 + len(monitoring.PANELS)]:
            (target,) = panel["targets"]
            assert any(f"{{{sel}}}" in target["expr"] for sel in own.values()), target["expr"]
            assert not any(sel in target["expr"] for sel in others), target["expr"]
    # every panel on the 24-column grid, none overlapping
    cells = [(x, y) for p in dashboard["panels"] for g in [p["gridPos"]]
             for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24


def test_dashboard_thresholds_are_the_alerts():
    plan = build_plan(Request("baseline", "sim", "kserve", monitoring="prometheus"))
    lines = {p["title"]: p["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]
             for p in monitoring.dashboard(plan)["panels"] if p["type"] != "row"}
    assert {t: s[0]["value"] for t, s in lines.items() if s} == {
        "Error ratio (endpoint picker)": monitoring.ERROR_RATIO["warning"],
        "Requests waiting per pod": monitoring.QUEUE_DEPTH, "KV cache usage per pod": monitoring.KV_CACHE_USAGE,
        "Time to first token p95": monitoring.TTFT_P95_SECONDS}


def test_dashboard_uid_fits_grafana_for_long_namespaces():
    plan = build_plan(Request("multimodel", "sim", "kserve", monitoring="prometheus", namespace="n" * 60))
    uid = monitoring.dashboard_uid(plan)
    assert len(uid) == 40 and uid.startswith("lightrail-nnn")
    other = build_plan(Request("multimodel", "sim", "kserve", monitoring="prometheus", namespace="n" * 59))
    assert monitoring.dashboard_uid(other) != uid


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    plan = build_plan(Request("multimodel", "sim", "kserve", monitoring="prometheus"))
    queries = [t["expr"] for p in monitoring.dashboard(plan)["panels"] for t in p.get("targets", [])]
    assert len(queries) == len(plan.servers) * len(monitoring.PANELS)
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"lightrail:panel{i}", "expr": q} for i, q in enumerate(queries)]}]}))
    checked = promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


# ---------------------------------------------------------------------------------------------
# promtool: the rules parse, and each alert fires on the series it is about and stays silent otherwise


def promtool(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def pod_name(regex: str) -> str:
    assert regex.endswith("-.*")
    return regex[:-2] + "abc12"


def scenarios(plan, server) -> dict[str, tuple[list[dict], list[list[dict]]]]:
    """Per alert: (series that make it fire, [series that keep it silent, ...]), for one model server."""
    ns = plan.namespace
    epp = f'namespace="{ns}", pod="{pod_name(monitoring.epp_pods(plan, server))}"'
    vllm = f'namespace="{ns}", pod="{pod_name(monitoring.server_pods(plan, server))}"'
    pool = f'namespace="{ns}", name="{monitoring.pool_name(plan, server)}"'

    def s(name, labels, values):
        return {"series": f"{name}{{{labels}}}", "values": values}

    def requests(errors_per_minute):   # 100 requests a minute
        return [s("llm_d_epp_request_total", epp + ', model_name="m"', "0+100x40"),
                s("llm_d_epp_request_error_total", epp + ', model_name="m"', f"0+{errors_per_minute}x40")]

    ready = [s("llm_d_epp_ready_endpoints", pool, "2x40")]
    waiting = [s("vllm:num_requests_waiting", vllm, "1x40")]

    def ttft(fast):
        le = {"1": "0+10x40" if fast else "0x40", "10": "0+10x40", "+Inf": "0+10x40"}
        return [s("vllm:time_to_first_token_seconds_bucket", f'{vllm}, le="{b}"', v) for b, v in le.items()]

    return {
        "LightrailEPPErrorRatioCritical": (requests(30), [requests(10)]),
        # the warning is for 5-20 %: silent below, and above, where the critical one speaks
        "LightrailEPPErrorRatioWarning": (requests(10), [requests(1), requests(30)]),
        "LightrailNoReadyEndpoints": ([s("llm_d_epp_ready_endpoints", pool, "0x40")], [ready]),
        "LightrailEPPMetricsAbsent": (waiting, [ready]),
        "LightrailModelServerMetricsAbsent": (ready, [waiting]),
        "LightrailQueueDepthHigh": ([s("vllm:num_requests_waiting", vllm, "20x40")], [waiting]),
        "LightrailKVCacheUsageHigh": ([s("vllm:kv_cache_usage_perc", vllm, "0.95x40")],
                                      [[s("vllm:kv_cache_usage_perc", vllm, "0.5x40")]]),
        "LightrailPreemptions": ([s("vllm:num_preemptions_total", vllm, "0+5x40")],
                                 [[s("vllm:num_preemptions_total", vllm, "3x40")]]),
        "LightrailTTFTHigh": (ttft(fast=False), [ttft(fast=True)]),
    }


def expected(rule: dict) -> dict:
    """The alert promtool should see: the rule's labels, plus what absent() keeps of its matchers."""
    labels = dict(rule["labels"], alertname=rule["alert"])
    if rule["expr"].startswith("absent("):
        labels.update(re.findall(r'(\w+)="([^"]*)"', rule["expr"]))
    labels.pop("alertname")
    return {"exp_labels": labels, "exp_annotations": rule["annotations"]}


@needs_promtool
@pytest.mark.parametrize("stack", ["llmd", "kserve"])
def test_promtool_checks_the_rules_and_each_alert_fires_and_stays_silent(stack, tmp_path):
    plan, objects = rendered("multimodel", stack)
    (rule,) = of_kind(objects, "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(plan.servers) * len(ALERTS)} rules found" in checked.stdout
    # one server's alert fires on its own series while the others' series are quiet (the scoping);
    # every server quiet: silent everywhere
    cases = {s.name: scenarios(plan, s) for s in plan.servers}
    rules = {(s.name, r["alert"]): r for s, g in zip(plan.servers, rule["spec"]["groups"]) for r in g["rules"]}
    tests = []
    for server in plan.servers:
        for alert, (fire, _) in cases[server.name].items():
            quiet = [x for other in plan.servers if other != server for x in cases[other.name][alert][1][0]]
            tests.append({"interval": "1m", "input_series": fire + quiet, "alert_rule_test": [
                {"eval_time": "30m", "alertname": alert, "exp_alerts": [expected(rules[server.name, alert])]}]})
    for alert, (_, silences) in cases[plan.servers[0].name].items():
        for k in range(len(silences)):
            quiet = [x for other in plan.servers for x in cases[other.name][alert][1][k]]
            tests.append({"interval": "1m", "input_series": quiet, "alert_rule_test": [
                {"eval_time": "30m", "alertname": alert, "exp_alerts": []}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert len(tests) == len(ALERTS) * len(plan.servers) + len(ALERTS) + 1 == 28


@needs_promtool
def test_promtool_refuses_a_broken_rule_through_validation():
    """Without the PrometheusRule CRD, validation hands the rules to promtool: a broken expression is a problem."""
    from lightrail.validate import validate_objects

    plan = build_plan(Request("baseline", "sim", "kserve", monitoring="prometheus"))
    rule = monitoring.prometheus_rule(plan)
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(llm_d_epp_request_total[5m]"
    problems = validate_objects([rule])
    assert problems and all(p.kind == "PrometheusRule" for p in problems)
    assert any("parse error" in str(p) for p in problems), problems


# ---------------------------------------------------------------------------------------------
# metric names: the rules' vLLM series are ones a real vLLM exports


@pytest.mark.vllm
def test_every_vllm_series_in_the_rules_and_dashboard_is_exported_by_a_real_vllm(vllm_server):
    exported = {line.split("{")[0].split(" ")[0] for line in httpx.get(vllm_server.metrics_url, timeout=10).text
                .splitlines() if line.startswith("vllm:")}
    plan = build_plan(Request("baseline", "cpu", "kserve", monitoring="prometheus"))
    used = {m for g in monitoring.rule_groups(plan) for r in g["rules"] for m in re.findall(r"vllm:\w+", r["expr"])}
    assert used == {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
                    "vllm:time_to_first_token_seconds_bucket"}
    shown = {m for p in monitoring.dashboard(plan)["panels"] for t in p.get("targets", [])
             for m in re.findall(r"vllm:\w+", t["expr"])}
    assert shown == used | {"vllm:request_success_total"}
    assert shown <= exported, shown - exported


@pytest.mark.parametrize("pattern, accel, stack", [
    ("baseline", "sim", "llmd"), ("caching", "sim", "llmd"), ("moe", "gpu", "llmd"),
    ("baseline", "sim", "kserve"), ("caching", "gpu", "kserve"), ("moe", "gpu", "kserve")])
def test_every_pattern_renders_valid_monitoring_the_units_predict(pattern, accel, stack):
    plan, objects = rendered(pattern, stack, accel)
    counted = {}
    for o in objects:
        counted[o["kind"]] = counted.get(o["kind"], 0) + 1
    assert counted == plan.objects
    assert counted["PrometheusRule"] == 1 and counted.get("PodMonitor", 0) + counted.get("ServiceMonitor", 0) == 2
    board, dashboard = rendered_dashboard(objects)
    assert dashboard["tags"] == ["lightrail", pattern, stack]   # valid: render_validated checked it against Grafana's schema
