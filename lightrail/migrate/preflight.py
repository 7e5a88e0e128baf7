"""Preflight: can this migration be done, judged from what the cluster holds - before any change.

Each check is pure over observed objects and returns the reason it fails (with the fix), so the
migration refuses with every reason at once and changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from lightrail.catalog import load_catalog
from lightrail.migrate.plan import Migration
from lightrail.migrate.routes import pool_name
from lightrail.ops.objects import labels, meta
from lightrail.smoke.discovery import server_pod_labels


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str = ""


def gateway_splits(gateway: dict | None, gateway_class: dict | None, ref: tuple[str, str]) -> Problem | None:
    """The Gateway exists and its controller splits one rule between two InferencePools by weight."""
    if gateway is None:
        return Problem(f"Gateway {ref[0]}/{ref[1]} does not exist", "deploy the source first (`invoke deploy`)")
    controller = (gateway_class or {}).get("spec", {}).get("controllerName")
    if controller is None:
        return Problem(f"GatewayClass {gateway.get('spec', {}).get('gatewayClassName')} of Gateway {ref[1]} "
                       "does not exist", "install its gateway controller")
    known = load_catalog().migration["controllers"]
    if controller not in known:
        return Problem(f"gateway controller {controller} is not known to split traffic between InferencePools",
                       f"known: {', '.join(k for k, v in known.items() if v['splits'])} (patterns/migration.yaml)")
    if not known[controller]["splits"]:
        return Problem(f"gateway controller {controller} cannot split traffic between InferencePools: "
                       f"{known[controller]['note']}", "migrate behind a Gateway of istio, GKE or agentgateway")
    return None


def source_present(m: Migration, pools: Mapping[str, dict | None]) -> list[Problem]:
    """The source runs the plan's models: their pools exist (pool names come from the model names)."""
    out = []
    for server in m.source.servers:
        name = pool_name(m.source, server)
        if pools.get(name) is None:
            out.append(Problem(f"InferencePool {m.namespace}/{name} of the source ({m.source.stack}, model "
                               f"{server.model}) does not exist",
                               "pass the --pattern, --accel and --model the source was deployed with "
                               "(see `invoke status`)"))
    return out


def selectors_apart(m: Migration, source_pods: list[dict], target_pod_labels: list[Mapping[str, str]]) -> list[Problem]:
    """Neither pool may select the other side's pods, or traffic would cross before any weight moves."""
    out = []
    for src, tgt in zip(m.source.servers, m.target.servers):
        tgt_sel = target_selector(m, tgt)
        crossing = [meta(p)["name"] for p in source_pods if _matches(tgt_sel, labels(p))]
        if crossing:
            out.append(Problem(f"the target pool {pool_name(m.target, tgt)} would select source pods "
                               f"({', '.join(crossing[:3])})"))
        src_sel = server_pod_labels(m.source, src)
        if any(_matches(src_sel, lbl) for lbl in target_pod_labels):
            out.append(Problem(f"the source pool {pool_name(m.source, src)} would select the target's pods"))
    return out


def target_selector(m: Migration, server) -> dict[str, str]:
    return server_pod_labels(m.target, server)


def _matches(selector: Mapping[str, str], lbl: Mapping[str, str]) -> bool:
    return all(lbl.get(k) == v for k, v in selector.items())
