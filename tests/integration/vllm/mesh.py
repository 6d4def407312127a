"""The whole mesh in process in front of the real vLLM (its CPU build): queue on FerretDB, admin, router, the
REST edge, and textgen supervising one vLLM server or attached to another that a test starts itself.

It is built from the router harness's pieces (config, serving, users, health waits); what it adds is only
what vLLM needs: a minute or two to start, its threads limited, its /metrics read as an outside observer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aigw_server.runtime.config import parse_config
from aigw_server.textgen.commands import server_command, server_env
from aigw_server.textgen.metrics import ServerMetrics, parse_vllm_metrics
from aigw_server.textgen.settings import resolve_settings
from tests.helpers import free_port
from tests.integration.vllm.helpers import VLLM_PYTHON

MODEL = "tiny-chat"
SERVED_NAME = "tiny"
SUPERVISED = "vllm-sup"
ATTACHED = "vllm-att"
STARTUP_SECONDS = 600.0
# The tiny model never emits its end token, so a request runs to max_tokens: long enough that a generation
# outlasts the polls that watch it (seconds on two cores), inside the context vLLM is given. Longer contexts
# starve vLLM's CPU server so much that it stops answering its health checks.
MAX_MODEL_LEN = 2048
LONG_TOKENS = 1900


def vllm_backend(name: str, model_port: int, capacity: int, **extra: Any) -> dict[str, Any]:
    """A textgen backend on vLLM's CPU build serving MODEL; `capacity` is also vLLM's --max-num-seqs."""
    return {
        "name": name,
        "kind": "textgen",
        "address": f"127.0.0.1:{free_port()}",
        "engine": "vllm",
        "mode": "supervise",
        "port": model_port,
        "engine_python": str(VLLM_PYTHON),
        "gpu_memory_utilization": 0.08,
        "max_model_len": MAX_MODEL_LEN,
        "models": [MODEL],
        "initial_model": MODEL,
        "capacity": capacity,
        "startup_timeout_seconds": STARTUP_SECONDS,
        **extra,
    }


def model_section(model_dir: Path) -> dict[str, Any]:
    return {
        MODEL: {
            "kind": "chat",
            "path": str(model_dir),
            "served_name": SERVED_NAME,
            "default_max_tokens": 16,
            "max_concurrent": 8,
            "max_waiting": 20,
        }
    }


@dataclass
class Engine:
    """A vLLM server this module starts itself (textgen attaches to it): its process group and its URL."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, model_dir: Path, capacity: int, log_path: Path) -> Engine:
        """Starts `vllm serve` as textgen would (same command line and environment); does not wait."""
        port = free_port()
        raw = {"models": model_section(model_dir), "backends": [vllm_backend(ATTACHED, port, capacity)]}
        settings = resolve_settings(parse_config(raw, env={}), {"AIGW_BACKEND": ATTACHED})
        argv = server_command(settings.backend, settings.models[MODEL], port)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                env=server_env(settings.backend, os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # vLLM's engine core is a child process: stopped with the group
            )
        return cls(proc, port, log_path)

    async def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if self.proc.poll() is not None:
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise AssertionError(f"vLLM exited with {self.proc.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                assert time.monotonic() < deadline, f"vLLM on {self.port} not ready within {timeout:.0f}s"
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


async def metrics(url: str) -> ServerMetrics:
    """vLLM's own gauges, read from its /metrics as any scraper would."""
    async with httpx.AsyncClient(timeout=5) as http:
        return parse_vllm_metrics((await http.get(f"{url}/metrics")).text)


async def wait_metrics(url: str, wanted: Any, timeout: float = 60.0, what: str = "vLLM's gauges") -> ServerMetrics:
    """Polls vLLM's /metrics until `wanted(metrics)` holds.

    A scrape that times out is only a late one: with both cores busy generating, vLLM's server can take
    seconds to answer; the deadline is what counts.
    """
    deadline = time.monotonic() + timeout
    current: ServerMetrics | None = None
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            with contextlib.suppress(httpx.TimeoutException):
                current = parse_vllm_metrics((await http.get(f"{url}/metrics")).text)
                if wanted(current):
                    return current
            assert time.monotonic() < deadline, f"{what} not reached within {timeout:.0f}s: {current}"
            await asyncio.sleep(0.02)


def chat_body(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    """An OpenAI chat body for MODEL's name inside vLLM."""
    return {"model": SERVED_NAME, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


@dataclass
class Saturation:
    """Keeps `streams` long generations running or waiting on a vLLM server, bypassing the mesh (as other clients
    of a shared engine do): only the server's /metrics shows that load. Each one that ends is replaced until the
    block is left, which drops them all (vLLM aborts a request whose client went away).

    Unstreamed: the answer comes whole at the end, so this costs the test's event loop nothing while it runs.
    `priority` is vLLM's own (lower runs first); `headers` carry the server's key where it has one.
    """

    url: str
    streams: int
    priority: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _keep_one(self, http: httpx.AsyncClient) -> None:
        body = chat_body("Tell a long story.", LONG_TOKENS)
        if self.priority is not None:
            body["priority"] = self.priority
        while True:
            await http.post(f"{self.url}/v1/chat/completions", json=body, headers=self.headers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Saturation]:
        async with httpx.AsyncClient(timeout=None) as http:
            self.tasks = [asyncio.create_task(self._keep_one(http)) for _ in range(self.streams)]
            try:
                yield self
            finally:
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
