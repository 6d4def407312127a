"""Models through the admin service against a real textgen supervising `transformers serve`, and the real queue.

One textgen backend (two names of the tiny model, switchable) is shared by the module, since each model
load costs seconds; tests run in file order and each leaves exactly one model loaded.
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
import pytest
import pytest_asyncio

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.admin.service import AdminService
from aigw_server.queue.service import build as build_queue
from aigw_server.runtime.config import parse_config
from aigw_server.textgen.service import TextgenService
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.admin.helpers import READY_SECONDS, bearer, raw_config, serve

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(400), pytest.mark.slow]

LOAD_SECONDS = 180.0
BACKEND = "cpu-a"


@dataclass
class Models:
    """The admin, queue and textgen services of this module."""

    admin_service: AdminService
    textgen: TextgenService
    admin: Any
    queue: Any
    md: tuple[tuple[str, str], ...]

    async def loaded(self) -> list[str]:
        reply = await self.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=self.md, timeout=10)
        return [m.model for m in reply.models if m.state == "loaded"]

    async def wait_loaded(self, model: str, timeout: float = LOAD_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while await self.loaded() != [model]:
            assert time.monotonic() < deadline, f"{model} not loaded after {timeout}s: {await self.loaded()}"
            await asyncio.sleep(0.5)


def mesh_config(ferretdb: FerretDBProcess, db_name: str, data_dir: Path, model_dir: Path) -> dict[str, Any]:
    return raw_config(
        ferretdb.uri,
        db_name,
        data_dir,
        models={
            "tiny-a": {"path": str(model_dir), "default_max_tokens": 8},
            "tiny-b": {"path": str(model_dir), "default_max_tokens": 8},
        },
        backends=[
            {
                "name": BACKEND,
                "kind": "textgen",
                "engine": "transformers",
                "port": free_port(),
                "models": ["tiny-a", "tiny-b"],
                "initial_model": "tiny-a",
                "switchable": True,
                "capacity": 4,
                "startup_timeout_seconds": LOAD_SECONDS,
            }
        ],
        auto_switch={"enabled": False, "cooldown_seconds": 0, "interval_seconds": 3600},
    )


def with_ports(raw: dict[str, Any], queue_port: int, textgen_address: str = "") -> dict[str, Any]:
    services = {**raw["services"], "queue": {"port": queue_port, "metrics_port": 0}}
    backends = [{**b, "address": textgen_address} for b in raw["backends"]]
    return {**raw, "services": services, "backends": backends}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def models(
    ferretdb: FerretDBProcess, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Models]:
    raw = mesh_config(ferretdb, f"t_{uuid.uuid4().hex[:12]}", tmp_path_factory.mktemp("admin-models"), tiny_model_dir)
    async with serve(build_queue(parse_config(raw, env={}))) as queue:
        queue_port = int(queue.address.rsplit(":", 1)[1])
        textgen = build_textgen(parse_config(with_ports(raw, queue_port), env={}), env={})
        async with serve(textgen) as backend:
            admin_service = AdminService(parse_config(with_ports(raw, queue_port, backend.address), env={}))
            async with serve(admin_service) as admin:
                await asyncio.wait_for(admin_service.ready.wait(), READY_SECONDS)
                stub = admin_pb2_grpc.AdminServiceStub(admin.channel)
                login = await stub.IssueToken(
                    admin_pb2.IssueTokenRequest(username="admin", password=raw["auth"]["admin_password"])
                )
                running = Models(
                    admin_service, textgen, stub, queue_pb2_grpc.QueueServiceStub(queue.channel), bearer(login.access_token)
                )
                await running.wait_loaded("tiny-a")
                yield running


async def test_list_models_shows_state_location_queue_and_health(models: Models) -> None:
    reply = await models.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=models.md, timeout=10)

    by_name = {m.model: m for m in reply.models}
    assert (by_name["tiny-a"].state, list(by_name["tiny-a"].loaded_on)) == ("loaded", [BACKEND])
    assert (by_name["tiny-b"].state, list(by_name["tiny-b"].loaded_on)) == ("stopped", [])
    assert list(by_name["tiny-b"].backends) == [BACKEND]
    assert by_name["tiny-a"].queue.model == "tiny-a"
    assert by_name["tiny-a"].queue.max_concurrent == 10
    [backend] = reply.backends
    assert (backend.kind, backend.health, backend.status.state) == ("textgen", "SERVING", common_pb2.BACKEND_STATE_READY)
    assert list(backend.status.loaded_models) == ["tiny-a"]


async def test_stop_and_start_say_what_happened_and_how_long_it_took(models: Models) -> None:
    stopped = await models.admin.StopModel(admin_pb2.StopModelRequest(model="tiny-a"), metadata=models.md, timeout=60)
    assert (stopped.outcome, list(stopped.backends)) == (f"unloaded from {BACKEND}", [BACKEND])
    assert stopped.elapsed_ms > 0
    assert await models.loaded() == []
    again = await models.admin.StopModel(admin_pb2.StopModelRequest(model="tiny-a"), metadata=models.md, timeout=60)
    assert again.outcome == "not loaded; nothing to do"

    started = await models.admin.StartModel(admin_pb2.StartModelRequest(model="tiny-a"), metadata=models.md, timeout=LOAD_SECONDS)

    assert (started.outcome, started.backend, list(started.status.loaded_models)) == ("loaded", BACKEND, ["tiny-a"])
    assert started.elapsed_ms > 100
    assert await models.loaded() == ["tiny-a"]
    already = await models.admin.StartModel(admin_pb2.StartModelRequest(model="tiny-a"), metadata=models.md, timeout=10)
    assert already.outcome == f"already loaded on {BACKEND}"


async def test_start_refuses_what_cannot_be_done(models: Models) -> None:
    cases = [
        (admin_pb2.StartModelRequest(model="tiny-b"), grpc.StatusCode.FAILED_PRECONDITION, "use SwitchBackend"),
        (admin_pb2.StartModelRequest(model="no-such-model"), grpc.StatusCode.NOT_FOUND, "no model named"),
        (admin_pb2.StartModelRequest(model="tiny-a", backend="gpu-9"), grpc.StatusCode.NOT_FOUND, "no backend named"),
        (admin_pb2.StartModelRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model: required"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await models.admin.StartModel(request, metadata=models.md, timeout=10)
        assert err.value.code() == code
        assert words in str(err.value.details())
    assert await models.loaded() == ["tiny-a"]


async def test_switch_backend_swaps_the_model(models: Models) -> None:
    request = admin_pb2.SwitchBackendRequest(backend=BACKEND, model="tiny-b")

    switched = await models.admin.SwitchBackend(request, metadata=models.md, timeout=LOAD_SECONDS)

    assert switched.outcome == "switched"
    assert list(switched.status.loaded_models) == ["tiny-b"]
    assert switched.elapsed_ms > 100
    assert await models.loaded() == ["tiny-b"]


async def test_auto_switcher_loads_the_model_with_queued_work_on_the_idle_backend(models: Models) -> None:
    chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="hello")])
    for _ in range(3):
        await models.queue.Submit(
            queue_pb2.SubmitRequest(model="tiny-a", client_id="tests", subject="tests", chat=chat), timeout=10
        )

    decisions = await models.admin_service.switcher.run_cycle()

    [decision] = decisions
    assert (decision.backend, decision.from_model, decision.to_model, decision.action) == (BACKEND, "tiny-b", "tiny-a", "switch")
    assert "tiny-a's demand" in decision.reason
    assert await models.loaded() == ["tiny-a"]
    shown = await models.admin.GetAutoSwitch(admin_pb2.GetAutoSwitchRequest(), metadata=models.md, timeout=10)
    assert shown.decisions[0].action == "switch"
    assert shown.decisions[0].to_model == "tiny-a"
    assert shown.decisions[0].scores["tiny-a"] >= 3
    assert [(p.backend, p.current_model, p.action) for p in shown.plan] == [(BACKEND, "tiny-a", "stay")]
    assert {d.model: d.queued for d in shown.demand} == {"tiny-a": 3, "tiny-b": 0}


async def test_a_killed_model_server_shows_in_the_crash_log(models: Models) -> None:
    server = models.textgen.backend.server_of("tiny-a")
    assert server is not None
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while True:
        listed = await models.admin.ListCrashes(admin_pb2.ListCrashesRequest(service="textgen"), metadata=models.md, timeout=10)
        if listed.events:
            break
        assert time.monotonic() < deadline, "no crash recorded within 60 s"
        await asyncio.sleep(0.3)

    event = listed.events[0]
    assert (event.backend, event.model, event.service) == (BACKEND, "tiny-a", "textgen")
    assert event.kind in (admin_pb2.CRASH_KIND_BACKEND_CRASH, admin_pb2.CRASH_KIND_ENGINE_RESTART)
    by_kind = await models.admin.ListCrashes(admin_pb2.ListCrashesRequest(kind=event.kind), metadata=models.md, timeout=10)
    assert event.id in {e.id for e in by_kind.events}
    other = await models.admin.ListCrashes(admin_pb2.ListCrashesRequest(model="tiny-b", service="textgen"), metadata=models.md)
    assert not other.events
    await models.wait_loaded("tiny-a")
