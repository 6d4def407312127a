"""The textgen service supervising a real `transformers serve`: chat, streams, cancellation, lifecycle, crashes.

One supervised server is shared by the module (each start costs seconds); tests run in file order and
each leaves the backend SERVING with one model loaded. Crashes go to a real queue service on FerretDB.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import pytest_asyncio

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw.textgen.v1 import textgen_pb2
from aigw_server.queue.service import build as build_queue
from aigw_server.runtime.server import create_server
from aigw_server.textgen.service import TextgenService, build
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.textgen.helpers import STARTUP_SECONDS, Client, chat, config, serving

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

LONG = 8000  # tokens: several seconds of generation for the tiny model


@dataclass
class Mesh:
    """The textgen service under test, its client, and the crash log of the real queue it reports to."""

    service: TextgenService
    client: Client
    crash_log: Any

    def server_pid(self) -> int:
        """The pid of the model server process now running."""
        servers = [s for name in self.service.settings.models if (s := self.service.backend.server_of(name))]
        assert servers, "no model server is running"
        assert servers[0].process is not None
        return servers[0].process.pid

    async def crashes(self, count: int, timeout: float = 10.0) -> list[queue_pb2.CrashEvent]:
        """The newest `count` textgen events in the queue's crash log, newest first, once there are that many."""
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.crash_log.ListCrashes(queue_pb2.ListCrashesRequest(service="textgen"), timeout=5)
            if len(reply.events) >= count or time.monotonic() > deadline:
                return list(reply.events)[:count]
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tiny_model_dir: Path, ferretdb: FerretDBProcess) -> AsyncIterator[Mesh]:
    database = {"uri": ferretdb.uri, "name": f"t_{uuid.uuid4().hex[:12]}"}
    cfg = config(tiny_model_dir, port=free_port(), queue_port=free_port(), database=database)
    queue = build_queue(cfg)
    queue_server, _, queue_health = await create_server(queue, cfg.services.queue.address)
    await queue_server.start()
    await queue.start(queue_health)
    service = build(cfg, env={})
    try:
        async with serving(service) as client, grpc.aio.insecure_channel(cfg.services.queue.address) as channel:
            await client.wait_health("SERVING", STARTUP_SECONDS)
            yield Mesh(service, client, queue_pb2_grpc.CrashLogServiceStub(channel))
    finally:
        await queue_server.stop(0)
        await queue.stop()


def cpu_seconds(pid: int, window: float) -> float:
    """CPU time the process used during the next `window` seconds."""
    proc = psutil.Process(pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(window)
    return float(sum(proc.cpu_times()[:2]) - before)


IDLE_CPU = 0.025  # CPU seconds per 0.5 s window of a server with nothing to do


def seconds_until_idle(pid: int, timeout: float) -> float:
    """Seconds until the process spends a 0.5 s window (nearly) idle; `timeout` if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cpu_seconds(pid, 0.5) < IDLE_CPU:
            return time.monotonic() - start
    return timeout


def stream_call(mesh: Mesh, model: str = "tiny-chat", max_tokens: int = LONG) -> grpc.aio.UnaryStreamCall:  # type: ignore[type-arg]
    request = textgen_pb2.StreamGenerateRequest(model=model, chat=chat(max_tokens=max_tokens), request_id="it-stream")
    call: grpc.aio.UnaryStreamCall = mesh.client.textgen.StreamGenerate(request, timeout=120)  # type: ignore[type-arg]
    return call


async def test_generate_answers_with_usage(mesh: Mesh) -> None:
    reply = await mesh.client.generate(max_tokens=12, temperature=0)
    again = await mesh.client.generate(max_tokens=12, temperature=0)

    result = reply.result
    assert result.model == "tiny-chat"
    assert result.message.role == "assistant"
    assert result.message.content.strip()
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 12
    assert result.usage.total_tokens == result.usage.prompt_tokens + 12
    assert again.result.message.content == result.message.content


async def test_default_max_tokens_come_from_the_model_config(mesh: Mesh) -> None:
    reply = await mesh.client.generate()

    assert reply.result.usage.completion_tokens == 16


async def test_stream_yields_deltas_then_finish_and_usage(mesh: Mesh) -> None:
    chunks = [c async for c in stream_call(mesh, max_tokens=20)]

    deltas = [c.delta for c in chunks if c.delta]
    assert len(deltas) >= 5
    assert "".join(deltas).strip()
    assert all(c.model == "tiny-chat" for c in chunks)
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage.completion_tokens == 20
    assert not any(c.finish_reason for c in chunks[:-1])


async def test_cancelling_a_stream_stops_generation_upstream(mesh: Mesh) -> None:
    pid = mesh.server_pid()
    call = stream_call(mesh)
    for _ in range(3):
        await call.read()
    busy = await asyncio.to_thread(cpu_seconds, pid, 1.0)

    call.cancel()
    idle_after = await asyncio.to_thread(seconds_until_idle, pid, 5.0)

    # Left alone, the 8000-token answer keeps the server busy for well over 5 seconds.
    assert busy > 4 * IDLE_CPU, f"the server should be generating while the stream is open ({busy:.2f}s CPU in 1s)"
    assert idle_after < 5.0, "the server kept generating after the client left"
    assert (await mesh.client.status()).in_flight == 0


async def test_bad_requests_get_clear_errors(mesh: Mesh) -> None:
    cases: list[tuple[str, dict[str, Any], grpc.StatusCode, str]] = [
        ("no-such-model", {}, grpc.StatusCode.NOT_FOUND, "unknown model"),
        ("elsewhere", {}, grpc.StatusCode.UNAVAILABLE, "not served by backend cpu-test"),
        ("tiny-chat-b", {}, grpc.StatusCode.UNAVAILABLE, "is not loaded"),
        ("tiny-chat", {"temperature": 3.0}, grpc.StatusCode.INVALID_ARGUMENT, "temperature must be in [0, 2]"),
        ("tiny-chat", {"max_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens must be >= 1"),
    ]
    for model, params, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.client.generate(model, **params)
        assert err.value.code() == code, (model, params, err.value.details())
        assert words in str(err.value.details())


async def test_switch_is_refused_while_a_request_is_in_flight(mesh: Mesh) -> None:
    call = stream_call(mesh)
    await call.read()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.client.lifecycle.SwitchModel(
            backend_pb2.SwitchModelRequest(model="tiny-chat-b", drain_timeout_seconds=0.3), timeout=30
        )

    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "in flight" in str(err.value.details())
    assert await mesh.client.state() == "BACKEND_STATE_READY"
    assert isinstance(await call.read(), textgen_pb2.StreamGenerateResponse), "the stream goes on"
    call.cancel()


async def test_unload_then_load_again(mesh: Mesh) -> None:
    pid = mesh.server_pid()

    unloaded = await mesh.client.lifecycle.UnloadModel(backend_pb2.UnloadModelRequest(), timeout=60)

    assert unloaded.outcome == "unloaded"
    assert list(unloaded.status.loaded_models) == []
    assert await mesh.client.state() == "BACKEND_STATE_IDLE"
    assert await mesh.client.health_status() == "NOT_SERVING"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.client.generate()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    loaded = await mesh.client.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="tiny-chat"), timeout=STARTUP_SECONDS)

    assert loaded.outcome == "loaded"
    assert list(loaded.status.loaded_models) == ["tiny-chat"]
    assert await mesh.client.health_status() == "SERVING"
    assert (await mesh.client.generate(max_tokens=4)).result.usage.completion_tokens == 4
    again = await mesh.client.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="tiny-chat"), timeout=10)
    assert again.outcome == "already loaded"


async def test_a_second_model_needs_a_switch_which_can_be_forced(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.client.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="tiny-chat-b"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "max_models 1" in str(err.value.details())

    busy = stream_call(mesh)
    await busy.read()

    switched = await mesh.client.lifecycle.SwitchModel(
        backend_pb2.SwitchModelRequest(model="tiny-chat-b", drain_timeout_seconds=0.2, force=True), timeout=STARTUP_SECONDS
    )

    with pytest.raises(grpc.aio.AioRpcError) as cut:
        while await busy.read() != grpc.aio.EOF:  # type: ignore[attr-defined]
            pass
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert switched.outcome == "switched"
    assert list(switched.status.loaded_models) == ["tiny-chat-b"]
    assert (await mesh.client.generate("tiny-chat-b", max_tokens=3)).result.model == "tiny-chat-b"
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await mesh.client.generate("tiny-chat")
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_attach_mode_serves_through_an_already_running_server(mesh: Mesh, tiny_model_dir: Path) -> None:
    (model,) = (await mesh.client.status()).loaded_models
    running = mesh.service.backend.server_of(model)
    assert running is not None
    attached = build(config(tiny_model_dir, mode="attach", url=f"http://127.0.0.1:{running.port}/v1"), env={})

    async with serving(attached) as client:
        await client.wait_health("SERVING", 5)
        reply = await client.generate(max_tokens=5)
        status = await client.status()
        loaded = await client.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="tiny-chat"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.lifecycle.UnloadModel(backend_pb2.UnloadModelRequest(), timeout=10)

    assert (reply.result.model, reply.result.usage.completion_tokens) == ("tiny-chat", 5)
    assert common_state(status) == "BACKEND_STATE_READY"
    assert list(status.loaded_models) == ["tiny-chat"]
    assert (status.engine, status.capacity, status.server_running, status.kv_cache_usage) == ("transformers", 4, -1, -1)
    assert loaded.outcome == "already loaded"
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not manage" in str(err.value.details())
    assert running.process is not None
    assert running.process.returncode is None, "detaching must leave the server running"


async def test_a_killed_server_is_reported_recorded_and_restarted(mesh: Mesh) -> None:
    (model,) = (await mesh.client.status()).loaded_models
    pid = mesh.server_pid()
    call = stream_call(mesh, model)
    await call.read()

    os.kill(pid, signal.SIGKILL)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() != grpc.aio.EOF:  # type: ignore[attr-defined]
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await mesh.client.wait_health("NOT_SERVING", 5) < 5
    status = await mesh.client.status()
    assert common_state(status) == "BACKEND_STATE_CRASHED"
    assert "code -9" in status.detail

    await mesh.client.wait_health("SERVING", STARTUP_SECONDS)

    status = await mesh.client.status()
    assert status.restarts == 1
    assert list(status.loaded_models) == [model]
    assert mesh.server_pid() != pid
    assert (await mesh.client.generate(model, max_tokens=3)).result.usage.completion_tokens == 3
    restart, crash = await mesh.crashes(2)
    assert (crash.kind, restart.kind) == (queue_pb2.CRASH_KIND_BACKEND_CRASH, queue_pb2.CRASH_KIND_ENGINE_RESTART)
    assert (crash.service, crash.backend, crash.model) == ("textgen", "cpu-test", model)
    assert crash.details["exit_code"] == "-9"
    assert "code -9" in crash.message
    assert crash.log_tail, "the crash record carries the server's last output lines"
    assert restart.details["restarts"] == "1"


def common_state(status: common_pb2.BackendStatus) -> str:
    return common_pb2.BackendState.Name(status.state)
