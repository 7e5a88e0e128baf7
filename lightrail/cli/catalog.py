"""`invoke patterns` and `invoke plan`: the catalog and what a deployment would create."""
from __future__ import annotations

import shlex

from rich.markup import escape
from rich.table import Table

from lightrail.catalog import STACKS, load_catalog
from lightrail.cli import command, user_errors
from lightrail.cli.common import PLAN_HELP, PLAN_ITERABLE, make_request, out_dir
from lightrail.cli.output import FORMATS, OUTPUT_HELP, emit, output_format
from lightrail.cli.output import console as screen
from lightrail.errors import LightrailError
from lightrail.plan import Plan, build_plan


def matrix_markdown() -> str:
    """The support matrix as a Markdown table (README.md embeds it; a test keeps them equal)."""
    cat = load_catalog()
    lines = ["| pattern | " + " | ".join(cat.accelerators) + " |", "|---" * (len(cat.accelerators) + 1) + "|"]
    for p in cat.patterns.values():
        cells = [", ".join(s for s in STACKS if not p.unsupported_reason(a, s)) or "—" for a in cat.accelerators]
        lines.append(f"| {p.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@command(help={"output": "table | json | yaml | markdown (markdown: the support matrix README.md embeds)"})
@user_errors
def patterns(c, output="table"):
    """The catalog: patterns x accelerators x stacks, with the reason for every unsupported one."""
    fmt = output_format(output, (*FORMATS, "markdown"))
    cat = load_catalog()
    rows = []
    for p in cat.patterns.values():
        for a in cat.accelerators:
            for s in STACKS:
                rows.append({"pattern": p.name, "accel": a, "stack": s,
                             "supported": not p.unsupported_reason(a, s), "reason": p.unsupported_reason(a, s) or ""})
    if fmt in ("json", "yaml"):
        emit(rows, fmt)
        return
    if fmt == "markdown":
        print(matrix_markdown())
        return
    table = Table(title="Lightrail patterns: stacks supported per accelerator")
    table.add_column("pattern")
    for a in cat.accelerators:
        table.add_column(a)
    for p in cat.patterns.values():
        cells = []
        for a in cat.accelerators:
            reasons = {s: p.unsupported_reason(a, s) for s in STACKS}
            cells.append(" ".join(s for s in STACKS if not reasons[s]) or "no")
        table.add_row(p.name, *cells)
    console = screen()
    console.print(table)
    for p in cat.patterns.values():
        console.print(f"[bold]{p.name}[/]: {p.summary}")
    for r in rows:
        if not r["supported"]:
            console.print(f"  [yellow]{r['pattern']} on {r['accel']}/{r['stack']}[/]: {r['reason']}")


def plan_table(plan: Plan) -> None:
    """Print a plan for humans: units in order, servers, resources, cost."""
    console = screen()
    d = plan.to_dict()
    console.print(f"[bold]{plan.pattern.name}[/] on [bold]{plan.accel}[/] ({plan.accel_type}) with "
                  f"[bold]{plan.stack}[/] in namespace [bold]{plan.namespace}[/], engine [bold]{plan.request.engine}[/]")
    units = Table(title="Apply order")
    for col in ("#", "unit", "tool", "source", "version", "objects"):
        units.add_column(col)
    for i, u in enumerate(plan.units, 1):
        units.add_row(str(i), u.name, u.tool, u.source, u.version,
                      ", ".join(f"{k} x{n}" for k, n in u.objects.items()))
    console.print(units)
    servers = Table(title="Model servers")
    for col in ("name", "model", "replicas", "pods", "per pod", "node selector", "args"):
        servers.add_column(col)
    for s in d["servers"]:
        model = s["model"] + (f"\naliases: {', '.join(s['aliases'])}" if s["aliases"] else "")
        if s["weights"]:
            w = s["weights"]
            model += f"\nweights: {w['uri']}" + (f" ({w['cache']})" if w["cache"] else "")
        servers.add_row(s["name"], model, str(s["replicas"]), str(s["pods"]),
                        ", ".join(f"{k}={v}" for k, v in s["resources"].items()),
                        "\n".join(f"{k}={v}" for k, v in s["node_selector"].items()) or "-",
                        " ".join(s["args"]))
    console.print(servers)
    console.print("objects: " + ", ".join(f"{k} x{n}" for k, n in d["objects"].items()))
    console.print("images: " + ", ".join(d["images"]))
    console.print(f"pod security: {plan.pod_security} (namespace {plan.namespace} enforces it; docs/pod-security.md)")
    console.print(f"monitoring: {plan.request.monitoring}")
    if plan.tls:
        source = f"cert-manager Issuer {plan.tls.issuer}" if plan.tls.issuer else "your Secret"
        console.print(f"TLS: HTTPS on {plan.gateway.name}:443 for {plan.tls.hostname or 'any host'}, "
                      f"Secret {plan.tls.secret} ({source})")
    totals = ", ".join(f"{k}: {v}" for k, v in d["accelerators_total"].items()) or "none"
    console.print(f"accelerators in total: {totals}; replicas {d['replicas_total']}, pods {d['pods_total']}")
    cost = d["cost"]
    console.print(f"estimated cost: {cost['per_hour']:.2f} {cost['currency']}/hour, "
                  f"{cost['per_day']:.2f} {cost['currency']}/day ({cost['basis']})")


@command(help={**PLAN_HELP, "output": OUTPUT_HELP}, iterable=PLAN_ITERABLE)
@user_errors
def plan(c, pattern="", accel="", stack="llmd", model=None, replicas="", namespace="lightrail",
         gpu_type="", topology="", provider="", kserve_api="", vllm_arg=None, output="table", inference_engine="",
         alias=None, weights="", cache_size="", pod_security="", monitoring="", tls_secret="", cert_manager_issuer="",
         hostname=""):
    """What a deployment would create: units in apply order, objects, images, resources, cost."""
    fmt = output_format(output)
    p = build_plan(make_request(pattern, accel, stack, model, replicas, namespace, gpu_type, topology,
                                provider, kserve_api, vllm_arg, inference_engine, alias, weights, cache_size,
                                pod_security=pod_security, monitoring=monitoring, tls_secret=tls_secret,
                                cert_manager_issuer=cert_manager_issuer, hostname=hostname))
    if fmt == "table":
        plan_table(p)
    else:
        emit(p.to_dict(), fmt)


@command(help={**PLAN_HELP, "out": "directory to write manifests.yaml and the tool inputs into (required)",
               "charts": "directory of upstream charts, DIR/<chart-name> (default: $LIGHTRAIL_CHARTS)",
               "schemas": "directory of CRDs and values schemas for validation (default: $LIGHTRAIL_SCHEMAS)",
               "offline": "llmd without charts: check the composed helmfile state and values, render no objects"},
         iterable=PLAN_ITERABLE)
@user_errors
def render(c, pattern="", accel="", stack="llmd", model=None, replicas="", namespace="lightrail",
           gpu_type="", topology="", provider="", kserve_api="", vllm_arg=None, out="",
           charts="", schemas="", offline=False, inference_engine="", alias=None, weights="", cache_size="",
           pod_security="", monitoring="", tls_secret="", cert_manager_issuer="", hostname=""):
    """Render the manifests with the real tools, validate every object, write them to --out."""
    from lightrail import render as rendering
    from lightrail.settings import charts_dir, schemas_dir

    if not out:
        raise LightrailError("--out=DIR is required (where manifests.yaml is written)")
    target = rendering.check_out(out_dir(out))
    p = build_plan(make_request(pattern, accel, stack, model, replicas, namespace, gpu_type, topology,
                                provider, kserve_api, vllm_arg, inference_engine, alias, weights, cache_size,
                                pod_security=pod_security, monitoring=monitoring, tls_secret=tls_secret,
                                cert_manager_issuer=cert_manager_issuer, hostname=hostname))
    result = rendering.render_validated(p, charts=charts_dir(charts or None), schemas=schemas_dir(schemas or None),
                                        offline=offline)
    files = rendering.write(result, target)
    console = screen()
    kinds: dict[str, int] = {}
    for obj in result.objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    if result.objects:
        console.print(f"rendered {len(result.objects)} objects, all valid: "
                      + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    for f in files:
        console.print(f"  wrote {f}", markup=False, highlight=False)
    for note in result.notes:   # notes name the output directory OUT; say which one it is
        console.print("[yellow]note:[/] " + escape(note.replace("cd OUT/", f"cd {shlex.quote(str(target))}/")))
