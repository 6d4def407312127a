"""The backend attached to a vLLM stand-in (vLLM cannot run here): sleep/wake, metrics, status, refusals.

The stand-in answers the documented vLLM endpoints over a real local socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from aigw.common.v1 import common_pb2
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from aigw_server.textgen.backend import TextgenBackend
from aigw_server.textgen.model_server import ServerState
from tests.unit.textgen.standin import METRICS, CrashLog, VllmStandIn, chat, make_backend


@dataclass
class Running:
    """A started backend, its stand-in server, the health values it reported and its crash events."""

    backend: TextgenBackend
    standin: VllmStandIn
    health: list[bool]
    crash_log: CrashLog


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    standin, crash_log = VllmStandIn(), CrashLog()
    backend = make_backend(standin, crash_log)
    health: list[bool] = []

    async def notify(serving: bool) -> None:
        health.append(serving)

    await backend.start(notify)
    yield Running(backend, standin, health, crash_log)
    await backend.stop()


async def settle(condition: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_status_carries_the_servers_metrics_without_asking_it(
    running: Running,
) -> None:
    backend, standin = running.backend, running.standin
    await settle(lambda: backend.snapshot().server_running >= 0)
    calls = len(standin.calls)

    snap = backend.snapshot()

    assert len(standin.calls) == calls, "a status read makes no upstream call"
    assert (snap.state, snap.loaded_models, snap.capacity, snap.engine) == (ServerState.READY, ["llama"], 32, "vllm")
    assert (snap.server_running, snap.server_waiting, snap.kv_cache_usage, snap.prefix_cache_hit_rate) == (2, 5, 0.5, 0.25)
    await settle(lambda: running.health == [False, True])


async def test_sleep_and_wake_use_the_dev_endpoints_and_flip_health(
    running: Running,
) -> None:
    backend, standin = running.backend, running.standin

    await backend.sleep(0)
    asleep = backend.snapshot()
    with pytest.raises(Unavailable, match="is asleep"):
        await backend.generate("llama", chat(), common_pb2.PRIORITY_NORMAL, "r")
    outcome = await backend.load("llama")

    assert "POST /sleep?level=1" in standin.calls
    assert standin.calls[-2:] == ["POST /wake_up", "GET /is_sleeping"]
    assert (asleep.state, asleep.loaded_models, asleep.server_running) == (ServerState.SLEEPING, [], -1)
    assert outcome == "woken"
    assert backend.snapshot().state is ServerState.READY
    await settle(lambda: running.health == [False, True, False, True])


async def test_with_direct_routers_a_drain_waits_for_the_engines_own_count() -> None:
    """Routers call the engine directly: textgen's own count is 0, the engine's metrics tell what still runs."""
    standin = VllmStandIn()
    backend = make_backend(standin, direct=True)

    async def notify(serving: bool) -> None:
        pass

    await backend.start(notify)
    server = backend.server_of("llama")
    assert server is not None
    try:
        with pytest.raises(FailedPrecondition, match=r"7 request\(s\) still in flight after draining for 0.2s"):
            await backend._drain([server], 0.2, force=False)
        assert backend.snapshot().state is ServerState.READY  # the refused drain gave the model back

        async def finish() -> None:
            await asyncio.sleep(0.1)
            standin.metrics = METRICS.replace(" 2.0", " 0.0").replace(" 5.0", " 0.0")

        task = asyncio.create_task(finish())
        await backend._drain([server], 5, force=False)
        await task
        assert backend.snapshot().state is ServerState.DRAINING
    finally:
        await backend.stop()


async def test_waking_from_level_2_reloads_the_weights_before_the_kv_cache(running: Running) -> None:
    """Level 2 discarded the weights: waking must reload them, or the model answers from garbage."""
    backend, standin = running.backend, running.standin

    await backend.sleep(2)
    del standin.calls[:]
    await backend.wake()

    wake = [c for c in standin.calls if c.startswith("POST")]
    assert wake == ["POST /wake_up?tags=weights", "POST /collective_rpc", "POST /wake_up?tags=kv_cache"]
    assert orjson.loads(standin.bodies[-1]) == {"method": "reload_weights"}
    assert backend.snapshot().state is ServerState.READY
    # A later level-1 nap wakes with the plain call again.
    await backend.sleep(1)
    del standin.calls[:]
    await backend.wake()
    assert [c for c in standin.calls if c.startswith("POST")] == ["POST /wake_up"]


async def test_generate_sends_the_served_name_and_request_id(running: Running) -> None:
    backend, standin = running.backend, running.standin

    result = await backend.generate("llama", chat(), common_pb2.PRIORITY_HIGH, "req-9")

    (request,) = standin.chats
    body = orjson.loads(request.content)
    assert body["model"] == "meta-llama/Llama-3-8B-Instruct"
    assert body["priority"] == -1, "vLLM runs HIGH first when it gets the priority"
    assert request.headers["x-request-id"] == "req-9"
    assert (result.model, result.message.content) == ("llama", "ok")


async def test_an_attached_vllm_without_the_priority_policy_gets_no_priority() -> None:
    standin = VllmStandIn()
    backend = make_backend(standin, priority_scheduling=False)
    await backend.start(lambda serving: asyncio.sleep(0))
    try:
        await backend.generate("llama", chat(), common_pb2.PRIORITY_HIGH, "req-9")
    finally:
        await backend.stop()

    assert "priority" not in orjson.loads(standin.chats[0].content), "a server on the fcfs policy rejects it"


async def test_an_attached_server_that_stops_answering_is_crashed_and_recovers(
    running: Running,
) -> None:
    backend, standin = running.backend, running.standin

    standin.healthy = False
    await settle(lambda: backend.snapshot().state is ServerState.CRASHED)
    standin.healthy = True
    await settle(lambda: backend.snapshot().state is ServerState.READY)

    await settle(lambda: running.health == [False, True, False, True])
    assert [kind for kind, _ in running.crash_log.events] == ["BACKEND_CRASH"]


async def test_an_attached_server_that_answers_late_twice_stays_ready(running: Running) -> None:
    """Two late health answers in a row are a busy server (the third probe answers): no crash, no health flap."""
    backend, standin = running.backend, running.standin
    states: list[ServerState] = []

    standin.late = 2

    def answered_again() -> bool:
        states.append(backend.snapshot().state)
        return standin.late == 0 and standin.calls[-1:] != ["GET /health"] and standin.calls.count("GET /health") > 3

    await settle(answered_again)
    await asyncio.sleep(0.1)  # more probes: still nothing

    assert set(states) == {ServerState.READY}
    assert running.crash_log.events == []
    assert running.health == [False, True], "serving since start, never flapped"


async def test_lifecycle_requests_that_cannot_apply_are_refused(running: Running) -> None:
    backend = running.backend

    with pytest.raises(NotFound):
        await backend.load("gpt-9")
    with pytest.raises(FailedPrecondition, match="not configured to serve model 'qwen'"):
        await backend.load("qwen")
    with pytest.raises(FailedPrecondition, match="does not manage"):
        await backend.switch("llama", 1, False)
    with pytest.raises(InvalidArgument, match="sleep level must be 1 or 2"):
        await backend.sleep(3)
    with pytest.raises(NotFound):
        await backend.generate("gpt-9", chat(), common_pb2.PRIORITY_NORMAL, "r")
    with pytest.raises(Unavailable, match="not served by backend gpu-0"):
        await backend.generate("qwen", chat(), common_pb2.PRIORITY_NORMAL, "r")


async def test_sleep_needs_sleep_mode() -> None:
    backend = make_backend(VllmStandIn(), sleep_mode=False)

    with pytest.raises(FailedPrecondition, match="sleep_mode: true"):
        await backend.sleep(1)


async def test_routers_get_the_advertised_url_while_textgen_keeps_probing_its_own() -> None:
    standin = VllmStandIn()
    backend = make_backend(standin, advertise_url="http://10.244.3.7:8000")
    await backend.start(lambda serving: asyncio.sleep(0))
    try:
        await settle(lambda: backend.engines() != [])
        (engine,) = backend.engines()
        await settle(lambda: any(call.startswith("GET /metrics") for call in standin.calls))
        await backend.generate("llama", chat(), common_pb2.PRIORITY_NORMAL, "req-1")
    finally:
        await backend.stop()

    assert engine.base_url == "http://10.244.3.7:8000"
    assert [spec.name for spec in engine.models] == ["llama"]
    # Nothing listens at the advertised address here: textgen's own calls all reached its URL.
    assert standin.hosts == {urlsplit(standin.url).hostname}, "health, metrics and its own calls stay on textgen's URL"
