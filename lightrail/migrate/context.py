"""What every migration operation needs besides the migration itself: the cluster, the Gateway's
address, output and the clock (injected, so waits and holds run on a fake clock in tests)."""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lightrail.ops.executor import DryRun
from lightrail.ops.secrets import Token
from lightrail.ops.target import Target
from lightrail.progress import Progress, no_progress

Out = Callable[[str], None]


@dataclass
class Context:
    target: Target
    cluster: object
    out: Out
    dry_run: bool
    url: str = ""                      # the Gateway, as this machine reaches it (probes)
    metrics_url: str = ""              # the gateway proxy's Prometheus counters (Istio, agentgateway), or none
    trust: ssl.SSLContext | bool = True  # how an https --url's certificate is checked (--ca-file)
    token: Token | None = None
    charts: Path | None = None
    dry: DryRun | None = None
    baseline: float | None = None      # the source's probe latency median (seconds)
    progress: Progress = no_progress   # live display of long waits (the CLI's), or none
    checked: bool = False              # preflight ran doctor's checks in this run: its deploys skip them
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def wait(self, title: str, seconds: float) -> None:
        """A timed wait (settle, drain) with its time left on the progress line."""
        self.out(f"- {title}")
        end = self.clock() + seconds
        with self.progress(title) as update:
            while (left := end - self.clock()) > 0:
                update(f"{left:.0f} s left")
                self.sleep(min(left, 1.0))


def indent(out: Out) -> Out:
    return lambda line: out(f"    {line}")
