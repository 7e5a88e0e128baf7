"""How fast the local control plane comes up and goes away (issue budget: ready in < 30 s warm).

    .venv/bin/python benchmarks/control_plane.py [--runs=3]

Each run: `kwokctl create cluster` from the local builds (the same step `invoke up --engine=kwok`
runs) until the API server answers /readyz, then one simulated node until it is Ready, then
`kwokctl delete cluster` until no process of it is left. Prints each phase per run and the median.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lightrail.ops import kwok
from lightrail.render import to_yaml
from lightrail.testing.localcluster import LocalCluster


def one_run(workdir: Path) -> dict[str, float]:
    cluster = LocalCluster("bench", workdir)
    t0 = time.perf_counter()
    cluster.start()
    while cluster.kubectl("get", "--raw", "/readyz", check=False).stdout.strip() != "ok":
        time.sleep(0.2)
    t1 = time.perf_counter()
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=to_yaml(kwok.node_objects(kwok.parse_nodes("cpu:1"))))
    cluster.kubectl("wait", "--for=condition=Ready", "node/kwok-cpu-default-0", "--timeout=60s")
    t2 = time.perf_counter()
    cluster.stop()
    left = cluster.wait_gone()
    t3 = time.perf_counter()
    assert not left, f"processes left behind: {left}"
    return {"api ready": t1 - t0, "node ready": t2 - t1, "down": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = []
    for i in range(parser.parse_args().runs):
        with tempfile.TemporaryDirectory(prefix="lightrail-bench-cp-") as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
    print("median: " + ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s" for k in runs[0]))


if __name__ == "__main__":
    main()
