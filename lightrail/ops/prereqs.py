"""`invoke prereqs`: what to install from pinned upstream sources, and what must already exist.

Pure: from the observed CRDs and GatewayClasses to steps. Something already installed at (or
above) its pinned version is skipped, so running prereqs twice installs nothing the second time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lightrail.catalog import load_catalog
from lightrail.ops import steps as st
from lightrail.ops.checks import (BUNDLE_ANNOTATIONS, GATEWAY, INFERENCEPOOL, LWS, MODEL_REWRITE, Facts,
                                  semver)
from lightrail.ops.objects import annotations, meta
from lightrail.ops.target import Target
from lightrail.plan import KSERVE_GATEWAY

# istiod's settings: the inference extension (InferencePool backends), and the RuntimeDefault seccomp
# profile on the gateway proxies it deploys into a deployment's namespace, which the Pod Security
# `restricted` level requires (its gateway template sets everything else restricted asks for).
ISTIOD_SETTINGS = ("pilot.env.ENABLE_GATEWAY_API_INFERENCE_EXTENSION=true", "gateways.seccompProfile.type=RuntimeDefault")

ISTIO_NAMESPACE = "istio-system"


@dataclass
class Prereqs:
    steps: list[st.Step] = field(default_factory=list)
    present: list[str] = field(default_factory=list)     # already installed
    missing: list[str] = field(default_factory=list)     # must exist, and prereqs does not install it


def plan_prereqs(facts: Facts, target: Target, stack: str, provider: str = "istio", istio: bool = False,
                 local_crds: Path | None = None) -> Prereqs:
    """local_crds: a LIGHTRAIL_SCHEMAS directory to apply the pinned CRDs from instead of their release
    URLs (no network needed; LWS then comes without its controller, which must run separately)."""
    versions = load_catalog().versions
    crds, out = versions["crds"], Prereqs()
    for (grp, kind, ver, pin_key), title in ((GATEWAY, "Gateway API CRDs"), (INFERENCEPOOL, "InferencePool CRDs"),
                                            (LWS, "LeaderWorkerSet")):
        pin = crds[pin_key]
        found = _crd(facts, grp, kind)
        bundle = annotations(found).get(BUNDLE_ANNOTATIONS.get(pin_key, ""), "") if found else ""
        served = found and ver in [v["name"] for v in found["spec"].get("versions") or [] if v.get("served")]
        if served and (not bundle or semver(bundle) >= semver(str(pin["version"]))):
            out.present.append(f"{title} {bundle or '(installed; version not recorded)'}")
            continue
        if local_crds is not None:
            out.steps.append(st.apply(target, [], f"install {title} {pin['version']} (CRDs from {local_crds})",
                                      source=str(local_crds / pin["schema"])))
            continue
        out.steps.append(st.apply(target, [], f"install {title} {pin['version']}", source=pin["url"]))
        if pin_key == "lws":
            out.steps.append(st.Step("wait for the LeaderWorkerSet controller", tool="kubectl", timeout=330,
                                     args=target.kubectl("wait", "--for=condition=Available", "--namespace=lws-system",
                                                         "deployment/lws-controller-manager", "--timeout=300s")))
    if stack == "llmd":
        _model_rewrite_crd(facts, target, crds["llm-d-router"], local_crds, out)
        _gateway_provider(facts, target, provider, istio, versions, out)
    else:
        _kserve(facts, versions, out)
    return out


def _model_rewrite_crd(facts: Facts, target: Target, pin: dict, local_crds: Path | None, out: Prereqs) -> None:
    """llm-d-router's InferenceModelRewrite CRD (model aliases). The endpoint picker checks for it once,
    at start, so it is installed before any deploy starts a picker (docs/aliases.md)."""
    grp, kind, _, _ = MODEL_REWRITE
    title = f"{kind} CRD (llm-d-router {pin['version']})"
    if _crd(facts, grp, kind):
        out.present.append(title)
    elif local_crds is not None:
        out.steps.append(st.apply(target, [], f"install {title} (from {local_crds})", source=str(local_crds / pin["schema"])))
    else:
        out.steps.append(st.apply(target, [], f"install {title}", source=pin["url"]))


def _crd(facts: Facts, grp: str, kind: str) -> dict | None:
    return next((c for c in facts.crds if (c.get("spec") or {}).get("group") == grp
                 and ((c.get("spec") or {}).get("names") or {}).get("kind") == kind), None)


def _gateway_provider(facts: Facts, target: Target, provider: str, istio: bool, versions: dict, out: Prereqs) -> None:
    class_name = load_catalog().gateways[provider]["class"]
    if any(meta(g).get("name") == class_name for g in facts.gateway_classes):
        out.present.append(f"GatewayClass {class_name}")
        return
    if provider != "istio" or not istio:
        hint = " (or rerun with --istio to install Istio)" if provider == "istio" else ""
        out.missing.append(f"GatewayClass {class_name}: install the {provider} gateway controller{hint}")
        return
    pin = versions["cluster"]["istio"]
    common = ("--repo", pin["repo"], "--version", str(pin["version"]), "--namespace", ISTIO_NAMESPACE,
              "--create-namespace", "--wait", "--timeout=600s")
    out.steps.append(st.Step(f"install Istio {pin['version']} CRDs (chart base)", tool="helm", timeout=630,
                             args=target.helm("upgrade", "--install", "istio-base", "base", *common)))
    settings = [a for s in ISTIOD_SETTINGS for a in ("--set", s)]
    out.steps.append(st.Step(f"install istiod {pin['version']} with the Gateway API inference extension", tool="helm",
                             timeout=630, args=target.helm("upgrade", "--install", "istiod", "istiod", *common, *settings)))


def _kserve(facts: Facts, versions: dict, out: Prereqs) -> None:
    kserve = versions["crds"]["kserve-llmisvc"]["version"]
    istio = versions["cluster"]["istio"]["version"]
    if _crd(facts, "serving.kserve.io", "LLMInferenceService"):
        out.present.append("KServe LLMInferenceService CRD")
    else:
        out.missing.append(f"KServe {kserve} with the LLMInferenceService controller (not installed by prereqs)")
    if any((meta(g).get("namespace"), meta(g).get("name")) == KSERVE_GATEWAY for g in facts.gateways):
        out.present.append(f"Gateway {'/'.join(KSERVE_GATEWAY)}")
    else:
        out.missing.append(f"Istio {istio} and KServe's ingress Gateway {'/'.join(KSERVE_GATEWAY)} "
                           "(installed with KServe's LLMInferenceService setup)")
