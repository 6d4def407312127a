"""The real vLLM (its CPU build, from .venv-vllm) through the whole mesh: router, queue on FerretDB, admin and
the REST edge, with textgen supervising one vLLM server and another textgen attached to a second one.

Through the public APIs only (router, admin, REST): answers that are vLLM's, priorities that reach vLLM's
scheduler, backend choice from vLLM's /metrics, a vLLM SIGKILLed mid-request (retried, restarted, logged)
and a model stopped and started by an operator. The two vLLM servers start together and serve the whole
module (each takes a minute or more on two cores); tests run in file order. vLLM's /metrics is read
directly only as an outside observer (is a request running or waiting in there now?).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
import pytest_asyncio

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.admin.service import AdminService
from aigw_server.edge.service import build as build_edge
from aigw_server.router.service import RouterService
from aigw_server.runtime.auth import TokenSigner
from aigw_server.runtime.config import Endpoint, GatewayConfig
from aigw_server.textgen.service import TextgenService
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.router.harness import (
    SECRET,
    USERS,
    QueueProcess,
    bearer,
    create_users,
    mesh_config,
    serving,
    wait_health,
    wait_until,
)
from tests.integration.vllm.mesh import (
    ATTACHED,
    LONG_TOKENS,
    MODEL,
    SERVED_NAME,
    STARTUP_SECONDS,
    SUPERVISED,
    Engine,
    Saturation,
    chat_body,
    metrics,
    model_section,
    vllm_backend,
    wait_metrics,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900), pytest.mark.slow]

ATTACHED_CAPACITY = 2
# Streams that keep the attached vLLM busy: three wait behind the two it runs, so that when generations end
# (two may end together) and their replacements are still on the way, its /metrics never show an empty queue.
SATURATING = ATTACHED_CAPACITY + 3
# vLLM runs lower priority values first; the mesh sends HIGH as -1 and LOW as 1.
BLOCKER_PRIORITY = -10
# A paused engine core runs this long at a time while a test waits for its first text to come through the mesh.
BURST_SECONDS = 0.05


@dataclass
class VllmMesh:
    """The running mesh: public stubs (typed as Any: grpc-stubs types aio stubs as sync) and what tests observe."""

    cfg: GatewayConfig
    router_service: RouterService
    textgen: TextgenService
    router: Any
    admin: Any
    edge_url: str
    admin_md: tuple[tuple[str, str], ...]

    @property
    def vllm_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.backend(SUPERVISED).port}"

    def vllm_headers(self) -> dict[str, str]:
        """What a caller of the supervised vLLM's /v1 routes must send: the key textgen gave it at this load."""
        server = self.textgen.backend.server_of(MODEL)
        assert server is not None
        return {"authorization": f"Bearer {server.api_key}"}

    def vllm_pid(self) -> int:
        """The supervised vLLM server's pid (what an operator finds with ps)."""
        server = self.textgen.backend.server_of(MODEL)
        assert server is not None
        assert server.process is not None
        return server.process.pid

    def md(self, subject: str = "alice") -> tuple[tuple[str, str], ...]:
        token, _ = TokenSigner(self.cfg.auth, SECRET).issue_access(subject, "user", ())
        return bearer(token)

    async def backend_status(self) -> common_pb2.BackendStatus:
        """The supervised backend's status as admin reports it (textgen's reading of vLLM's /metrics)."""
        reply = await self.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=self.admin_md, timeout=10)
        [backend] = [b for b in reply.backends if b.status.backend == SUPERVISED]
        status: common_pb2.BackendStatus = backend.status
        return status


@dataclass
class Replica:
    """A second router whose config also lists a textgen attached to the module's own vLLM server."""

    cfg: GatewayConfig
    router_service: RouterService
    router: Any
    engine: Engine


def chat(content: str = "Hello there", max_tokens: int = 8, **params: Any) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=MODEL, messages=[common_pb2.ChatMessage(role="user", content=content)], max_tokens=max_tokens, **params
    )


async def job_of(router: Any, md: Any, request_id: str) -> common_pb2.Job:
    reply = await router.GetRequest(router_pb2.GetRequestRequest(request_id=request_id), metadata=md, timeout=10)
    job: common_pb2.Job = reply.request
    return job


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, vllm_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The vLLM server the attached textgen uses; started first, so that it starts while the mesh's own does."""
    started = Engine.start(tiny_model_dir, ATTACHED_CAPACITY, tmp_path_factory.mktemp("vllm") / "vllm.log")
    yield started
    started.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(
    ferretdb: FerretDBProcess, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> AsyncIterator[VllmMesh]:
    """Queue, admin, router, edge and textgen supervising vLLM with max-num-seqs 1 (queued requests wait inside vLLM)."""
    cfg = mesh_config(
        ferretdb.uri,
        f"t_{uuid.uuid4().hex[:12]}",
        tmp_path_factory.mktemp("vllm-mesh"),
        [vllm_backend(SUPERVISED, free_port(), capacity=1)],
        models=model_section(tiny_model_dir),
        # Leases outlive an event loop slowed by vLLM taking both cores.
        queue={"lease_ttl_seconds": 10.0},
        routing={"status_interval_seconds": 0.2, "down_retry_seconds": 30, "workers": 2},
    )
    async with contextlib.AsyncExitStack() as stack:
        queue = QueueProcess(cfg)
        await queue.start()
        stack.push_async_callback(queue.stop)
        await create_users(cfg.services.queue.address, (*USERS, "crash"))
        textgen = build_textgen(cfg, {"AIGW_BACKEND": SUPERVISED})
        await stack.enter_async_context(serving(textgen, cfg.backend(SUPERVISED).address, until_serving=False))
        admin_service = AdminService(cfg)
        await stack.enter_async_context(serving(admin_service, cfg.services.admin.address, until_serving=False))
        router_service = RouterService(cfg)
        router_port = free_port()
        await stack.enter_async_context(serving(router_service, f"127.0.0.1:{router_port}", until_serving=False))
        edge = build_edge(replace(cfg, services=replace(cfg.services, router=Endpoint("127.0.0.1", router_port))))
        edge_port = await edge.start("127.0.0.1", 0)
        stack.push_async_callback(edge.stop, 0)
        await wait_health(cfg.backend(SUPERVISED).address, "SERVING", timeout=STARTUP_SECONDS, what="textgen on vLLM")
        await wait_until(lambda: MODEL in router_service.pool.servable_models(), what="the router sees vLLM")
        await asyncio.wait_for(admin_service.ready.wait(), 20)
        router_channel = grpc.aio.insecure_channel(f"127.0.0.1:{router_port}")
        admin_channel = grpc.aio.insecure_channel(cfg.services.admin.address)
        stack.push_async_callback(router_channel.close, None)
        stack.push_async_callback(admin_channel.close, None)
        admin_token, _ = TokenSigner(cfg.auth, SECRET).issue_access("root", "admin", ())
        yield VllmMesh(
            cfg,
            router_service,
            textgen,
            router_pb2_grpc.RouterServiceStub(router_channel),
            admin_pb2_grpc.AdminServiceStub(admin_channel),
            f"http://127.0.0.1:{edge_port}",
            bearer(admin_token),
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replica(mesh: VllmMesh, engine: Engine) -> AsyncIterator[Replica]:
    """A second router on the same queue (routers scale out so), choosing between the supervised vLLM and one
    that a second textgen attaches to.

    The first router and admin know the supervised backend alone: its priorities meet in one vLLM scheduler,
    and StopModel can stop the model (an attached backend cannot unload what it does not run).
    """
    attached = vllm_backend(ATTACHED, 0, ATTACHED_CAPACITY, mode="attach", url=engine.url)
    supervised = mesh.cfg.backend(SUPERVISED)
    both = mesh_config(
        mesh.cfg.database.uri,
        mesh.cfg.database.name,
        Path(mesh.cfg.data_dir),
        [attached],
        models={MODEL: {}},
        routing={"status_interval_seconds": 0.2, "down_retry_seconds": 30, "workers": 2},
    )
    cfg = replace(mesh.cfg, backends=(supervised, both.backend(ATTACHED)))
    await engine.wait_ready()
    async with contextlib.AsyncExitStack() as stack:
        textgen = build_textgen(cfg, {"AIGW_BACKEND": ATTACHED})
        await stack.enter_async_context(serving(textgen, cfg.backend(ATTACHED).address, until_serving=False))
        await wait_health(cfg.backend(ATTACHED).address, "SERVING", timeout=60, what="textgen attached to vLLM")
        router_service = RouterService(cfg)
        port = free_port()
        await stack.enter_async_context(serving(router_service, f"127.0.0.1:{port}", until_serving=False))
        views = router_service.pool.views
        await wait_until(lambda: all(views[n].holds(MODEL, time.monotonic()) for n in views), what="both backends ready")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stack.push_async_callback(channel.close, None)
        yield Replica(cfg, router_service, router_pb2_grpc.RouterServiceStub(channel), engine)


# ---- 1. answers that are vLLM's ----


async def test_chat_streams_and_rest_are_answered_by_vllm(mesh: VllmMesh) -> None:
    md = mesh.md()
    reply = await mesh.router.Chat(chat(temperature=0.0), metadata=md, timeout=120)
    async with httpx.AsyncClient(timeout=60) as http:
        body = chat_body("Hello there", 8, temperature=0)
        direct = (await http.post(f"{mesh.vllm_url}/v1/chat/completions", json=body, headers=mesh.vllm_headers())).json()
        rest = await http.post(
            f"{mesh.edge_url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8, "temperature": 0},
            headers={"authorization": md[0][1]},
        )
    streamed = router_pb2.StreamChatRequest(model=MODEL, messages=chat().messages, max_tokens=8, temperature=0.0)
    events = [e async for e in mesh.router.StreamChat(streamed, metadata=md, timeout=120)]

    # vLLM itself, asked directly, greedy: the same text and token counts; it names the model as it serves it.
    assert direct["model"] == SERVED_NAME
    assert (reply.status, reply.model, reply.finish_reason) == (common_pb2.SUCCEEDED, MODEL, "length")
    assert reply.response == direct["choices"][0]["message"]["content"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (direct["usage"]["prompt_tokens"], 8)
    job = await job_of(mesh.router, md, reply.request_id)
    assert (job.state, job.backend, job.attempt) == (common_pb2.SUCCEEDED, SUPERVISED, 1)
    assert job.chat_result.usage.completion_tokens == 8

    deltas = [e.delta for e in events if e.delta]
    assert len(deltas) >= 2, "vLLM streams token by token"
    assert "".join(deltas) == reply.response
    last = events[-1]
    assert (last.status, last.finish_reason, last.usage.completion_tokens) == (common_pb2.SUCCEEDED, "length", 8)

    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["choices"][0]["message"]["content"] == reply.response
    assert body["usage"]["completion_tokens"] == 8
    assert body["model"] == MODEL


# ---- 2. priorities in vLLM's scheduler ----


async def test_priorities_reach_vllms_scheduler(mesh: VllmMesh) -> None:
    """With one sequence at a time in vLLM, a LOW request then a HIGH one wait there: HIGH runs first.

    Requests sent to vLLM directly with a priority above both hold its one slot until both are seen waiting,
    however long the mesh takes to deliver them; then they go, and vLLM's scheduler chooses between the two.
    """
    md = mesh.md()
    finished: list[str] = []

    async def timed(label: str) -> None:
        await mesh.router.Chat(chat(max_tokens=40, priority=label), metadata=md, timeout=300)
        finished.append(label)

    # One runs, one waits: when the running one ends the other takes the slot, before LOW or HIGH could.
    blockers = Saturation(mesh.vllm_url, streams=2, priority=BLOCKER_PRIORITY, headers=mesh.vllm_headers())
    async with blockers.running():
        await wait_metrics(mesh.vllm_url, lambda m: m.running == 1 and m.waiting == 1, what="the blockers in vLLM")
        low = asyncio.create_task(timed("low"))
        await wait_metrics(mesh.vllm_url, lambda m: m.waiting >= 2, what="LOW waiting in vLLM")
        high = asyncio.create_task(timed("high"))
        await wait_metrics(mesh.vllm_url, lambda m: m.waiting >= 3, what="HIGH waiting in vLLM")
    await asyncio.wait_for(asyncio.gather(low, high), 120)

    assert finished == ["high", "low"]


# ---- 3. status and backend choice from vLLM's /metrics ----


async def test_status_shows_the_request_running_inside_vllm(mesh: VllmMesh) -> None:
    async with httpx.AsyncClient() as http:
        exposition = (await http.get(f"{mesh.vllm_url}/metrics")).text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert f"\n{name}{{" in exposition, f"vLLM exports {name}"

    md = mesh.md()
    seen: common_pb2.BackendStatus | None = None
    deadline = time.monotonic() + 120
    while seen is None:
        long = asyncio.ensure_future(mesh.router.Chat(chat(max_tokens=LONG_TOKENS), metadata=md, timeout=300))
        while seen is None and not long.done():
            status = await mesh.backend_status()
            seen = status if status.server_running >= 1 else None
            assert time.monotonic() < deadline, "admin never showed the request running inside vLLM"
            await asyncio.sleep(0.05)
        long.cancel()  # seen (or already finished): the caller going away cancels it inside vLLM too
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await long
    idle_deadline = time.monotonic() + 30
    while (after := await mesh.backend_status()).server_running != 0:
        assert time.monotonic() < idle_deadline, after
        await asyncio.sleep(0.1)

    assert seen.server_running == 1, "max-num-seqs 1"
    assert (seen.engine, seen.state) == ("vllm", common_pb2.BACKEND_STATE_READY)
    assert seen.server_waiting >= 0
    assert 0.0 <= seen.kv_cache_usage <= 1.0


async def test_the_router_sends_work_away_from_the_vllm_its_metrics_show_loaded(replica: Replica, mesh: VllmMesh) -> None:
    md = mesh.md()
    attached = replica.router_service.pool.views[ATTACHED]

    async def backends_of(count: int) -> list[str]:
        chosen = []
        for _ in range(count):
            # HIGH: an attached vLLM on the priority policy takes the priority field textgen sends.
            reply = await replica.router.Chat(chat(max_tokens=4, priority="high"), metadata=md, timeout=120)
            chosen.append((await job_of(replica.router, md, reply.request_id)).backend)
        return chosen

    async with Saturation(replica.engine.url, streams=SATURATING).running():
        await wait_until(lambda: attached.server_waiting >= 1, timeout=60, what="the router reads the attached vLLM's queue")
        loaded = await backends_of(6)
        assert attached.server_waiting >= 1, "still loaded at the end"
        assert attached.kv_cache_usage > 0.0
    await wait_metrics(replica.engine.url, lambda m: m.running == 0 and m.waiting == 0, what="the attached vLLM idle")
    await wait_until(lambda: attached.server_waiting == 0, what="the router sees the attached vLLM idle")
    idle = await backends_of(6)

    # The router's own calls leave the attached backend idle: only vLLM's /metrics show its load.
    assert loaded == [SUPERVISED] * 6
    assert set(idle) == {SUPERVISED, ATTACHED}, "both idle: the work is shared"


async def test_stop_is_refused_whole_while_an_attached_backend_serves_the_model(replica: Replica, mesh: VllmMesh) -> None:
    """An admin that knows both backends: the attached one cannot unload, so StopModel unloads nothing."""
    pid = mesh.vllm_pid()
    admin_service = AdminService(replica.cfg)
    address = f"127.0.0.1:{free_port()}"
    async with serving(admin_service, address, until_serving=False), grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(admin_service.ready.wait(), 20)
        admin: Any = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.StopModel(admin_pb2.StopModelRequest(model=MODEL), metadata=mesh.admin_md, timeout=60)

    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert mesh.textgen.backend.server_of(MODEL) is not None, "the supervised backend kept its model"
    assert mesh.vllm_pid() == pid
    assert MODEL in (await mesh.backend_status()).loaded_models
    assert ATTACHED in str(err.value.details())
    assert "nothing was unloaded" in str(err.value.details())
    reply = await replica.router.Chat(chat(max_tokens=4), metadata=mesh.md(), timeout=120)
    assert reply.status == common_pb2.SUCCEEDED


# ---- 4. a vLLM killed mid-request ----


async def read_into(stream: Any, messages: asyncio.Queue[Any]) -> None:
    """Reads a gRPC stream to its end into `messages` (a wait for a message that times out leaves the call alone)."""
    while (message := await stream.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        messages.put_nowait(message)


async def first_text_in_bursts(engine_core: list[psutil.Process], messages: asyncio.Queue[Any]) -> None:
    """Pauses vLLM's engine-core processes and lets them run BURST_SECONDS at a time until the stream's first text
    arrives (tokens already made go on flowing from vLLM's API server); they stay paused."""
    for process in engine_core:
        process.suspend()
    deadline = time.monotonic() + 120
    while True:
        try:
            while not (await asyncio.wait_for(messages.get(), 0.5)).delta:
                pass
            return
        except TimeoutError:
            assert time.monotonic() < deadline, "no text came while vLLM ran in bursts"
            for process in engine_core:
                process.resume()
            await asyncio.sleep(BURST_SECONDS)
            for process in engine_core:
                process.suspend()


async def test_a_vllm_sigkilled_mid_request_is_retried_restarted_and_logged(replica: Replica, mesh: VllmMesh) -> None:
    md = mesh.md("crash")
    pid = mesh.vllm_pid()
    attached = replica.router_service.pool.views[ATTACHED]
    request = router_pb2.StreamChatRequest(model=MODEL, messages=chat().messages, max_tokens=LONG_TOKENS)
    async with Saturation(replica.engine.url, streams=SATURATING).running():
        # The attached vLLM looks busy, so the request goes to the supervised one.
        await wait_until(lambda: attached.server_waiting >= 1, timeout=60, what="the router reads the attached vLLM's queue")
        stream = replica.router.StreamChat(request, metadata=md, timeout=300)
        request_id = (await stream.read()).request_id
        messages: asyncio.Queue[router_pb2.StreamChatResponse] = asyncio.Queue()
        reader = asyncio.create_task(read_into(stream, messages))
        # vLLM now generates in short bursts only, so its first text reaches this test long before it could
        # finish the answer, however slowly the mesh and this busy event loop pass the text on.
        await first_text_in_bursts(psutil.Process(pid).children(recursive=True), messages)
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(reader, 60)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert request_id in str(err.value.details()), "the stream says where the retried answer will be"

    deadline = time.monotonic() + 120
    while (job := await job_of(replica.router, md, request_id)).state not in (common_pb2.SUCCEEDED, common_pb2.FAILED):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)
    assert (job.state, job.attempt, job.backend) == (common_pb2.SUCCEEDED, 2, ATTACHED)
    assert [(e.backend, e.code) for e in job.attempt_errors] == [(SUPERVISED, "UNAVAILABLE")]
    assert job.chat_result.usage.completion_tokens == LONG_TOKENS
    history = await replica.router.ListRequests(router_pb2.ListRequestsRequest(model=MODEL), metadata=md, timeout=10)
    assert [(j.request_id, j.state) for j in history.requests] == [(request_id, common_pb2.SUCCEEDED)]

    deadline = time.monotonic() + STARTUP_SECONDS
    while (status := await mesh.backend_status()).restarts < 1 or MODEL not in status.loaded_models:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.5)
    assert mesh.vllm_pid() != pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    crashes = await mesh.admin.ListCrashes(admin_pb2.ListCrashesRequest(model=MODEL, service="textgen"), metadata=mesh.admin_md)
    kinds = {(e.backend, e.kind) for e in crashes.events}
    assert (SUPERVISED, queue_pb2.CRASH_KIND_BACKEND_CRASH) in kinds
    assert (SUPERVISED, queue_pb2.CRASH_KIND_ENGINE_RESTART) in kinds
    again = await mesh.router.Chat(chat(max_tokens=4), metadata=md, timeout=120)
    assert (await job_of(mesh.router, md, again.request_id)).backend == SUPERVISED


# ---- 5. stop and start through admin ----


async def test_admin_stops_and_starts_the_vllm_model(mesh: VllmMesh) -> None:
    md = mesh.md()
    pid = mesh.vllm_pid()

    stopped = await mesh.admin.StopModel(admin_pb2.StopModelRequest(model=MODEL), metadata=mesh.admin_md, timeout=120)

    assert (stopped.outcome, list(stopped.backends)) == (f"unloaded from {SUPERVISED}", [SUPERVISED])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(httpx.ConnectError):
        await metrics(mesh.vllm_url)
    # The router learns it from its next status poll of the backend (until then: "no healthy backend holds it").
    await wait_until(lambda: mesh.router_service.pool.stopped(MODEL), what="the router sees the model stopped")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.router.Chat(chat(max_tokens=4), metadata=md, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"model {MODEL!r} is stopped" in str(err.value.details())

    started = await mesh.admin.StartModel(
        admin_pb2.StartModelRequest(model=MODEL), metadata=mesh.admin_md, timeout=STARTUP_SECONDS
    )

    assert (started.outcome, started.backend, list(started.status.loaded_models)) == ("loaded", SUPERVISED, [MODEL])
    assert mesh.vllm_pid() != pid
    reply = await mesh.router.Chat(chat(max_tokens=4), metadata=md, timeout=120)
    assert (reply.status, reply.usage.completion_tokens) == (common_pb2.SUCCEEDED, 4)
    assert (await job_of(mesh.router, md, reply.request_id)).backend == SUPERVISED
