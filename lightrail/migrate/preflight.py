"""Preflight: can this migration be done, judged from what the cluster holds - before any change.

Each check is pure over observed objects and returns the reason it fails (with the fix), so the
migration refuses with every reason at once and changes nothing.
"""
from __future__ import annotations

import re
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


def gateway_programmed(gateway: dict, m: Migration) -> Problem | None:
    """The kserve side is served through the front route with `router.gateway.refs` naming the kept
    Gateway, and KServe then reports the LLMInferenceService Ready only once that Gateway is Programmed
    (KServe v0.20.0 llmisvc EvaluateGatewayConditions); a kserve deployment on KServe's shared gateway
    without refs never waited for it, so a Gateway without an address (kind without a load balancer)
    served it, and would stop the migration at its first kserve deploy."""
    cond = next((c for c in (gateway.get("status") or {}).get("conditions") or [] if c.get("type") == "Programmed"), {})
    if cond.get("status") == "True":
        return None
    why = f"{cond.get('reason')}: {cond.get('message')}" if cond else "no Programmed condition"
    return Problem(f"Gateway {m.gateway[0]}/{m.gateway[1]} is not Programmed ({why}); KServe waits for it once the "
                   "kserve side is served through the front route", "give the Gateway an address (a load balancer "
                   "for its Service, or the gateway controller's ClusterIP option) until it reports Programmed")


ISTIOD_SELECTOR = "app=istiod"   # istiod's Deployments, as Istio's istio-discovery chart labels them
_RELEASE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:-(alpha|beta|rc)\.(\d+))?")
_STAGES = {"alpha": 0, "beta": 1, "rc": 2, None: 3}


def release(tag: str) -> tuple[int, ...] | None:
    """An Istio image tag as a comparable release (1.31.0-rc.0 before 1.31.0; `-distroless` ignored),
    or None for what is not a release (a dev build, a digest)."""
    found = _RELEASE.fullmatch(tag.removesuffix("-distroless"))
    if found is None:
        return None
    major, minor, patch, stage, n = found.groups()
    return int(major), int(minor), int(patch or 0), _STAGES[stage], int(n or 0)


def gateway_fixed(gateway: dict, gateway_class: dict | None, istiods: list[dict]) -> Problem | None:
    """The gateway controller carries the fixes a weighted rule needs (patterns/migration.yaml
    `without_fix`): istiod's version from its image tag, for the Gateway's revision (istio.io/rev;
    every istiod when none is labelled with it). No istiod Deployment readable (one run outside the
    cluster): nothing to judge."""
    controller = (gateway_class or {}).get("spec", {}).get("controllerName")
    known = load_catalog().migration["controllers"].get(controller, {}).get("without_fix")
    if not known:
        return None
    rev = labels(gateway).get("istio.io/rev", "default")
    mine = [d for d in istiods if labels(d).get("istio.io/rev", "default") == rev] or istiods
    since = release(str(known["since"]))
    for deployment in mine:
        containers = deployment["spec"]["template"]["spec"]["containers"]
        image = next((c for c in containers if c["name"] == "discovery"), containers[0])["image"]
        tag = image.rsplit("@", 1)[0].rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        found = release(tag)
        if found is None:
            continue
        last = known["last"].get(f"{found[0]}.{found[1]}")
        if found[:2] < since[:2] or (last is not None and found <= release(str(last))):
            fixed = ", ".join(f"{minor}: after {v}" for minor, v in known["last"].items())
            return Problem(f"istiod {tag} ({meta(deployment)['namespace']}/{meta(deployment)['name']}) lacks the fix for "
                           f"{known['issue']}: one empty InferencePool in a weighted rule answers the whole rule 503",
                           f"upgrade istiod to a patch release that carries it ({fixed}; {since[0]}.{since[1]} or "
                           "later) before migrating (patterns/migration.yaml)")
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
