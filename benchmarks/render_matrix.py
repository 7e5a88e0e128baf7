"""Time the full render matrix against the sum of the raw tool calls it wraps.

    .venv/bin/python benchmarks/render_matrix.py [--workers N] [--charts DIR]

1. sequential, no cache: every supported (pattern, accel, stack) rendered one after another;
   the tool calls it makes are timed one by one (lightrail.tools records each call) — their sum
   is the "raw" cost: what a shell script calling helmfile/kustomize would spend;
2. parallel, no cache: the same matrix on threads (the tools are separate processes that spend
   much of their time starting helm and waiting on pipes, so threads overlap them well);
3. parallel, warm cache: the same again with nothing changed.
Prints one JSON document; docs/architecture.md quotes the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightrail import tools  # noqa: E402
from lightrail.catalog import STACKS, load_catalog  # noqa: E402
from lightrail.errors import LightrailError  # noqa: E402
from lightrail.plan import Request, build_plan  # noqa: E402
from lightrail.render import Rendered, render_validated  # noqa: E402
from lightrail.settings import charts_dir, schemas_dir  # noqa: E402


def matrix():
    cat = load_catalog()
    return [build_plan(Request(p, a, s)) for p in cat.patterns for a in cat.accelerators for s in STACKS
            if not cat.patterns[p].unsupported_reason(a, s)]


def render_many(plans, *, charts, schemas, offline, workers):
    """Every plan rendered and validated on `workers` threads (default two per core): a render or its error."""
    def one(plan):
        try:
            return render_validated(plan, charts=charts, schemas=schemas, offline=offline)
        except LightrailError as err:
            return err

    with ThreadPoolExecutor(max_workers=workers or 2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(one, plans))


def timed(plans, workers, charts, schemas):
    before = len(tools.calls())
    start = time.perf_counter()
    # Without charts the llmd renders are offline checks (helmfile build + values schemas).
    results = render_many(plans, charts=charts, schemas=schemas, offline=charts is None, workers=workers)
    wall = time.perf_counter() - start
    failed = [str(r) for r in results if not isinstance(r, Rendered)]
    calls = tools.calls()[before:]
    return wall, calls, failed, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=None, help="threads (default: two per core)")
    ap.add_argument("--charts", default=None, help="LIGHTRAIL_CHARTS (default: the environment)")
    args = ap.parse_args()
    charts, schemas = charts_dir(args.charts), schemas_dir()
    plans = matrix()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache      # a cold cache that is ours alone
        os.environ["LIGHTRAIL_NO_CACHE"] = "1"
        seq_wall, seq_calls, failed, _ = timed(plans, 1, charts, schemas)
        raw = sum(c.seconds for c in seq_calls)
        par_wall, _, _, _ = timed(plans, args.workers, charts, schemas)
        del os.environ["LIGHTRAIL_NO_CACHE"]
        timed(plans, args.workers, charts, schemas)           # fill the cache
        warm_wall, warm_calls, _, results = timed(plans, args.workers, charts, schemas)
    report = {
        "renders": len(plans),
        "objects": sum(len(r.objects) for r in results if isinstance(r, Rendered)),
        "charts": str(charts) if charts else "none: llmd renders are offline checks",
        "tool_calls": len(seq_calls),
        "raw_tool_seconds_sequential": round(raw, 2),
        "lightrail_sequential_seconds": round(seq_wall, 2),
        "lightrail_parallel_seconds": round(par_wall, 2),
        "workers": args.workers or 2 * (os.cpu_count() or 1),
        "ratio_parallel_vs_raw": round(par_wall / raw, 2) if raw else None,
        "repeat_with_cache_seconds": round(warm_wall, 3),
        "tool_calls_on_repeat": len(warm_calls),
        "failed": failed,
    }
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
