"""kwokctl's port choice: one cluster creation or restart at a time on the machine (lightrail.ops.kwok.ports_lock),
across processes - two test runs, or a test run and `invoke up --engine=kwok`."""
from __future__ import annotations

import subprocess
import sys
import threading

from lightrail.ops import kwok
from lightrail.settings import ROOT

HOLDER = """
import sys
from lightrail.ops import kwok
with kwok.ports_lock():
    print("held", flush=True)
    sys.stdin.read()          # until the test closes it
"""


def test_the_ports_lock_is_held_by_one_process_at_a_time():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        acquired = threading.Event()

        def take():
            with kwok.ports_lock():
                acquired.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        assert not acquired.wait(2), "taken while another process held it"
        holder.stdin.close()                  # the holder leaves the lock and exits
        assert holder.wait(timeout=60) == 0
        assert acquired.wait(60), "never taken after the holder let go"
    finally:
        holder.kill()
        holder.wait()
