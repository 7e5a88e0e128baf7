"""Regenerate the tables in docs/patterns/<pattern>.md from the plans (between the markers).

    .venv/bin/python scripts/gen_pattern_docs.py          # rewrite
    .venv/bin/python scripts/gen_pattern_docs.py --check  # exit 1 if a page is stale (tests run this)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightrail.catalog import STACKS, load_catalog  # noqa: E402
from lightrail.plan import Request, build_plan  # noqa: E402
from lightrail.settings import ROOT  # noqa: E402

START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def section(pattern: str) -> str:
    cat = load_catalog()
    p = cat.patterns[pattern]
    out = [START, "", "## What it deploys, per accelerator", ""]
    out.append("| accel | type | models | replicas | pods | per pod | node selector | container args | est. cost |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for accel in cat.accelerators:
        reason = p.unsupported_reason(accel, "llmd")
        if reason:
            out.append(f"| {accel} | — | not supported: {reason} | | | | | | |")
            continue
        plan = build_plan(Request(pattern, accel, "llmd"))
        s = plan.servers[0]
        sel = "<br>".join(f"`{k}: {v}`" for k, v in s.node_selector.items()) or "—"
        res = ", ".join(f"`{k}: {v}`" for k, v in s.resources.items())
        args = " ".join(f"`{a}`" for a in s.args)
        models = "<br>".join(plan.served_models)
        out.append(f"| {accel} | {plan.accel_type} | {models} | {s.replicas} | {plan.pods_total} | {res} | {sel} "
                   f"| {args} | {plan.cost.per_hour:.2f} {plan.cost.currency}/h |")
    for stack in STACKS:
        out += ["", f"## On the {stack} stack (apply order, gpu)", ""]
        reason = p.unsupported_reason("gpu", stack)
        if reason:
            out.append(f"Not supported: {reason}")
            continue
        plan = build_plan(Request(pattern, "gpu", stack))
        out += ["| # | unit | tool | source | version | objects |", "|---|---|---|---|---|---|"]
        for i, u in enumerate(plan.units, 1):
            objs = ", ".join(f"{k} ×{n}" for k, n in u.objects.items())
            out.append(f"| {i} | `{u.name}` | {u.tool} | {u.source} | {u.version} | {objs} |")
    out += ["", "Endpoint-picker scorers (weights): "
            + ", ".join(f"`{k}`={v}" for k, v in p.scorers.items()) + ".", "", END]
    return "\n".join(out)


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name in load_catalog().patterns:
        path = ROOT / "docs" / "patterns" / f"{name}.md"
        text = path.read_text() if path.exists() else f"# {name}\n\n{START}\n{END}\n"
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        new = head + section(name) + tail
        if new != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(new)
    if check and stale:
        print("stale: " + ", ".join(str(p) for p in stale) + " (run scripts/gen_pattern_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
