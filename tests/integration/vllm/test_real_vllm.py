"""textgen in front of the real vLLM (its CPU build, from .venv-vllm), for what the whole-mesh module
(test_vllm_mesh.py) does not show: the engine key textgen gives a supervised vLLM and hands to routers only,
an attached textgen that takes the key from its environment, and a cancelled stream ending vLLM's request.

One vLLM process serves the whole module (it takes a minute or two to start); tests run in file order.
Its CPU threads are limited so that the rest of the machine stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
import pytest_asyncio

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.runtime.config import parse_config
from aigw_server.textgen.metrics import parse_vllm_metrics
from aigw_server.textgen.service import TextgenService, build
from tests.helpers import free_port
from tests.integration.textgen.helpers import Client, chat, serving
from tests.integration.vllm.helpers import VLLM_PYTHON

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900), pytest.mark.slow]

STARTUP_SECONDS = 600.0


def gateway_config(
    model_dir: Path, *, mode: str, port: int = 0, url: str = "", capacity: int = 2, api_key_env: str = ""
) -> dict[str, Any]:
    return {
        # A queue port nothing listens on: crash events stay in textgen's log (this module checks no queue).
        "services": {"textgen": {"metrics_port": 0}, "queue": {"port": free_port(), "metrics_port": 0}},
        "mesh_tls": {"mode": "plaintext"},  # in-process textgen on loopback: no service identity
        "routing": {"status_interval_seconds": 0.2},
        "models": {"tiny-chat": {"path": str(model_dir), "served_name": "tiny", "default_max_tokens": 16}},
        "backends": [
            {
                "name": "vllm-cpu",
                "kind": "textgen",
                "engine": "vllm",
                "mode": mode,
                "port": port,
                "url": url,
                "api_key_env": api_key_env,
                "engine_python": str(VLLM_PYTHON),
                "gpu_memory_utilization": 0.08,
                "max_model_len": 2048,
                "models": ["tiny-chat"],
                "initial_model": "tiny-chat",
                "capacity": capacity,
                "startup_timeout_seconds": STARTUP_SECONDS,
            }
        ],
    }


@dataclass
class Supervised:
    service: TextgenService
    client: Client
    url: str

    def api_key(self) -> str:
        server = self.service.backend.server_of("tiny-chat")
        assert server is not None
        return server.api_key

    def server_pid(self) -> int:
        server = self.service.backend.server_of("tiny-chat")
        assert server is not None
        assert server.process is not None
        return server.process.pid


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def supervised(tiny_model_dir: Path, vllm_env: None) -> AsyncIterator[Supervised]:
    """textgen supervising vLLM with max-num-seqs 1, so that queued requests wait in vLLM's scheduler."""
    port = free_port()
    cfg = parse_config(gateway_config(tiny_model_dir, mode="supervise", port=port, capacity=1), env={})
    service = build(cfg, env={})
    async with serving(service) as client:
        await client.wait_health("SERVING", STARTUP_SECONDS)
        yield Supervised(service, client, f"http://127.0.0.1:{port}")


async def generate(
    client: Client, priority: common_pb2.Priority.ValueType = common_pb2.PRIORITY_NORMAL, **params: Any
) -> textgen_pb2.GenerateResponse:
    reply: textgen_pb2.GenerateResponse = await client.textgen.Generate(
        textgen_pb2.GenerateRequest(model="tiny-chat", chat=chat(**params), request_id="vllm-1", priority=priority),
        timeout=120,
    )
    return reply


async def test_vllm_refuses_callers_without_the_key_only_textgen_and_routers_hold(supervised: Supervised) -> None:
    key = supervised.api_key()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    async with httpx.AsyncClient(base_url=supervised.url, timeout=60) as attacker:
        anonymous = await attacker.post("/v1/chat/completions", json=body)
        guessed = await attacker.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer guess"})
        keyed = await attacker.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert (anonymous.status_code, guessed.status_code, keyed.status_code) == (401, 401, 200)

    server = psutil.Process(supervised.server_pid())
    for proc in [server, *server.children(recursive=True)]:
        assert not any(key in arg for arg in proc.cmdline()), "the key must not be on any command line"
    assert key not in str(await supervised.client.status())
    engines = await supervised.client.lifecycle.GetEngines(backend_pb2.GetEnginesRequest(), timeout=5)
    assert [(e.base_url, e.api_key, e.priority_scheduling) for e in engines.engines] == [(supervised.url, key, True)]


async def test_a_textgen_attached_to_the_same_vllm_serves_and_reads_its_metrics(
    supervised: Supervised, tiny_model_dir: Path
) -> None:
    config = gateway_config(tiny_model_dir, mode="attach", url=supervised.url + "/v1", api_key_env="TINY_VLLM_KEY")
    cfg = parse_config(config, env={})
    async with serving(build(cfg, env={"TINY_VLLM_KEY": supervised.api_key()})) as client:
        await client.wait_health("SERVING", 30)
        reply = await generate(client, common_pb2.PRIORITY_HIGH, max_tokens=6)
        deadline = time.monotonic() + 30
        while (status := await client.status()).server_running < 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)

    assert reply.result.usage.completion_tokens == 6, "an attached vLLM on the priority policy takes the priority field"
    assert status.kv_cache_usage >= 0.0


async def vllm_running(url: str) -> float:
    """vllm:num_requests_running as vLLM's /metrics says now."""
    async with httpx.AsyncClient(timeout=5) as http:
        exposition = (await http.get(f"{url}/metrics")).text
    running = parse_vllm_metrics(exposition).running
    assert running >= 0, "vLLM exports no vllm:num_requests_running"
    return running


async def test_a_cancelled_stream_ends_vllms_request_at_once(supervised: Supervised) -> None:
    """The caller of a stream goes away (as the router does when its client leaves): vLLM aborts the request."""

    async def drain(call: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            async for _ in call:
                pass

    request = textgen_pb2.GenerateRequest(model="tiny-chat", chat=chat(max_tokens=1500), request_id="gone-1")
    deadline = time.monotonic() + 120
    while True:  # the tiny model may end an answer early (EOS): take one that vLLM is seen running
        call = supervised.client.textgen.StreamGenerate(request, timeout=120)
        reader = asyncio.ensure_future(drain(call))
        while not reader.done() and await vllm_running(supervised.url) != 1:
            await asyncio.sleep(0.02)
        if not reader.done():
            break
        assert time.monotonic() < deadline, "every answer ended before vLLM counted it running"
    call.cancel()
    left = time.monotonic()
    await reader
    while await vllm_running(supervised.url) != 0:
        assert time.monotonic() - left < 5.0, "vLLM still runs the request its caller left"
        await asyncio.sleep(0.02)
    stopped = time.monotonic() - left
    # With one sequence at a time, a new request is answered at once only if the old one is gone.
    reply = await generate(supervised.client, max_tokens=4)
    assert reply.result.usage.completion_tokens == 4
    assert stopped < 1.0, f"vllm:num_requests_running reached 0 {stopped:.2f} s after the cancel"
