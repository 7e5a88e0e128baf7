"""Compare stored runs: a Markdown table and PNG plots side by side.

Every load point of every run is one row (a sweep contributes one row per rate). Plots:
latency percentiles and throughput per row, and throughput-versus-latency curves when any
run is a sweep. Runs of different scenarios measure different things, so mixing them is
refused unless asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightrail.bench import store, summary
from lightrail.errors import LightrailError

LATENCY_TITLES = {"ttft": "time to first token", "tpot": "time per output token", "itl": "inter-token latency",
                  "e2e": "end-to-end latency"}


@dataclass(frozen=True)
class Row:
    run: str          # short label of the run
    load: str
    point: dict


@dataclass(frozen=True)
class Comparison:
    table: str
    files: tuple[Path, ...]


def load_runs(paths: list[Path], *, mixed: bool = False) -> list[tuple[Path, dict, dict]]:
    if not paths:
        raise LightrailError("nothing to compare", fix="pass run directories, e.g. from `invoke bench.list`")
    runs = [(p, *store.load(p)) for p in paths]
    scenarios = sorted({s["scenario"] for _, s, _ in runs})
    if len(scenarios) > 1 and not mixed:
        raise LightrailError(f"these runs are of different scenarios ({', '.join(scenarios)}); their numbers "
                             "are not comparable", fix="compare runs of one scenario, or pass --mixed")
    return runs


def labels(runs: list[tuple[Path, dict, dict]]) -> list[str]:
    """pattern/stack/accel, plus what else differs between the runs (harness, scenario, time)."""
    base = [f"{m['pattern']}/{m['stack']}/{m['accel']}" for _, _, m in runs]
    for key in ("harness", "scenario"):
        values = [s[key] for _, s, _ in runs]
        if len(set(values)) > 1:
            base = [f"{b} {v}" for b, v in zip(base, values)]
    if len(set(base)) < len(base):
        base = [f"{b} @{p.name[9:15]}" for b, (p, _, _) in zip(base, runs)]
    return base


def rows(runs: list[tuple[Path, dict, dict]]) -> list[Row]:
    out = []
    for label, (_, s, _) in zip(labels(runs), runs):
        for p in s["points"]:
            load = p["load"]
            text = f"rate {load['request_rate']}" + (f", conc {load['max_concurrency']}" if load["max_concurrency"] else "")
            out.append(Row(label, text, p))
    return out


def table(rows_: list[Row], currency: str = "USD") -> str:
    head = ["run", "load", "ok/failed", "TTFT p50/p90/p99 ms", "TPOT p50/p90 ms", "ITL p50/p99 ms",
            "E2E p50/p90/p99 ms", "req/s", "out tok/s", "prefix hit", f"{currency}/M out tok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows_:
        p, lat = r.point, r.point["latency_ms"]
        cache = p.get("prefix_cache") or {}
        hit = cache.get("hit_rate")
        cost = p.get("cost_per_million_output_tokens")
        cells = [r.run, r.load, f"{p['requests']['ok']}/{p['requests']['failed']}",
                 _pcts(lat["ttft"], ("p50", "p90", "p99")), _pcts(lat["tpot"], ("p50", "p90")),
                 _pcts(lat["itl"], ("p50", "p99")), _pcts(lat["e2e"], ("p50", "p90", "p99")),
                 f"{p['throughput']['requests_per_s']:.2f}", f"{p['throughput']['output_tokens_per_s']:.1f}",
                 "n/a" if hit is None else f"{hit:.1%}", "n/a" if cost is None else f"{cost:.4g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(paths: list[Path], out: Path, *, mixed: bool = False) -> Comparison:
    runs = load_runs(paths, mixed=mixed)
    rs = rows(runs)
    currency = runs[0][1].get("currency", "USD")
    text = "# Benchmark comparison\n\nRuns:\n" + "".join(
        f"- `{p.name}`: {m['pattern']}/{m['stack']}/{m['accel']}, scenario {s['scenario']}, harness "
        f"{m['harness']['name']} ({m['harness']['version']}), git {str(m['git']['commit'])[:10]}\n"
        for p, s, m in runs) + "\n" + table(rs, currency)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.md"]
    files[0].write_text(text)
    files += [plot_latency(rs, out / "latency.png"), plot_throughput(rs, out / "throughput.png")]
    if any(len(s["points"]) > 1 for _, s, _ in runs):
        files.append(plot_curves(runs, out / "throughput-vs-latency.png"))
    return Comparison(table=text, files=tuple(files))


def plot_latency(rows_: list[Row], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(14, 3 + 0.9 * len(rows_)), sharey=True)
    names = [f"{r.run}\n{r.load}" for r in rows_]
    height = 0.8 / len(summary.PERCENTILES)
    for ax, key in zip(axes.flat, summary.LATENCIES):
        for j, pct in enumerate(summary.PERCENTILES):
            values = [r.point["latency_ms"][key][pct] or 0 for r in rows_]
            ax.barh([i + j * height for i in range(len(rows_))], values, height, label=pct)
        ax.set_title(LATENCY_TITLES[key])
        ax.set_xlabel("ms")
        ax.set_yticks([i + height for i in range(len(rows_))], names, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[0].invert_yaxis()     # shared y axis: first run on top
    fig.suptitle("Latency percentiles")
    return _save(plt, fig, path)


def plot_throughput(rows_: list[Row], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 1.5 + 0.6 * len(rows_)), sharey=True)
    names = [f"{r.run}\n{r.load}" for r in rows_]
    for ax, (key, title) in zip(axes, (("requests_per_s", "requests / s"), ("output_tokens_per_s", "output tokens / s"))):
        ax.barh(range(len(rows_)), [r.point["throughput"][key] for r in rows_], color="tab:green")
        ax.set_title(title)
        ax.set_yticks(range(len(rows_)), names, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle("Throughput")
    return _save(plt, fig, path)


def plot_curves(runs: list[tuple[Path, dict, dict]], path: Path) -> Path:
    """Throughput (x) against p90 latency (y), one line per run: where latency starts to climb."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for label, (_, s, _) in zip(labels(runs), runs):
        xs = [p["throughput"]["output_tokens_per_s"] for p in s["points"]]
        for ax, key in zip(axes, ("ttft", "itl")):
            ys = [p["latency_ms"][key]["p90"] or 0 for p in s["points"]]
            ax.plot(xs, ys, marker="o", label=label)
            for x, y, p in zip(xs, ys, s["points"]):
                ax.annotate(str(p["load"]["request_rate"] if len(s["points"]) > 1 else ""), (x, y), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    for ax, key in zip(axes, ("ttft", "itl")):
        ax.set_xlabel("output tokens / s")
        ax.set_ylabel(f"p90 {LATENCY_TITLES[key]} (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Throughput vs latency (points labelled with the offered request rate)")
    return _save(plt, fig, path)


def _pcts(stats: dict, keys: tuple[str, ...]) -> str:
    return " / ".join("n/a" if stats.get(k) is None else f"{stats[k]:.1f}" for k in keys)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
