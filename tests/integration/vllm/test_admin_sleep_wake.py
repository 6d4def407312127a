"""Admin SleepBackend/WakeBackend through BackendService: a textgen attached to vLLM's real sleep/wake routes
(the stand-in engine of sleep_server.py), and the refusals of a transformers backend and an OCR backend."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw_server.admin.service import AdminService
from aigw_server.edge.service import build as build_edge
from aigw_server.ocr.service import build as build_ocr
from aigw_server.queue.service import build as build_queue
from aigw_server.runtime.config import parse_config
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import READY_SECONDS, bad_field, bearer, raw_config, serve
from tests.integration.vllm.test_sleep_wake import standin, vllm_routes  # noqa: F401  (the module's routes fixture)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]


@dataclass
class Admin:
    """The admin stub, the REST edge in front of it, and an admin's and a plain user's credentials."""

    stub: Any
    rest: httpx.AsyncClient
    md: tuple[tuple[str, str], ...]
    user_md: tuple[tuple[str, str], ...]


def mesh_config(ferretdb: FerretDBProcess, data_dir: Path, url: str) -> dict[str, Any]:
    attach = {"kind": "textgen", "mode": "attach", "url": url, "models": ["tiny"]}
    return raw_config(
        ferretdb.uri,
        f"t_{uuid.uuid4().hex[:12]}",
        data_dir,
        models={"tiny": {}, "tesseract": {"kind": "ocr", "languages": ["eng"]}},
        backends=[
            {"name": "gpu-0", "engine": "vllm", "sleep_mode": True, **attach},
            {"name": "cpu-0", "engine": "transformers", **attach},
            {"name": "ocr-0", "kind": "ocr", "engine": "tesseract", "models": ["tesseract"], "workers": 1},
        ],
    )


def addressed(raw: dict[str, Any], queue: str, backends: dict[str, str]) -> dict[str, Any]:
    services = {**raw["services"], "queue": {"port": int(queue.rsplit(":", 1)[1]), "metrics_port": 0}}
    return {**raw, "services": services, "backends": [{**b, "address": backends.get(b["name"], "")} for b in raw["backends"]]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(
    ferretdb: FerretDBProcess,
    vllm_routes: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Admin]:
    raw = mesh_config(ferretdb, tmp_path_factory.mktemp("admin-sleep"), vllm_routes)
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(serve(build_queue(parse_config(raw, env={}))))
        with_queue = parse_config(addressed(raw, queue.address, {}), env={})
        addresses = {}
        for name in ("gpu-0", "cpu-0"):
            textgen = build_textgen(with_queue, env={"AIGW_BACKEND": name})
            addresses[name] = (await stack.enter_async_context(serve(textgen))).address
        ocr = build_ocr(with_queue, "ocr-0")
        addresses["ocr-0"] = (await stack.enter_async_context(serve(ocr))).address
        await ocr.wait_loaded()
        admin_service = AdminService(parse_config(addressed(raw, queue.address, addresses), env={}))
        running = await stack.enter_async_context(serve(admin_service))
        await asyncio.wait_for(admin_service.ready.wait(), READY_SECONDS)
        stub = admin_pb2_grpc.AdminServiceStub(running.channel)
        password = raw["auth"]["admin_password"]
        token = (await stub.IssueToken(admin_pb2.IssueTokenRequest(username="admin", password=password))).access_token
        await stub.CreateUser(admin_pb2.CreateUserRequest(username="alice", password="alices-password-1"), metadata=bearer(token))
        user = (await stub.IssueToken(admin_pb2.IssueTokenRequest(username="alice", password="alices-password-1"))).access_token
        admin_port = int(running.address.rsplit(":", 1)[1])
        edge_cfg = {"services": {"admin": {"port": admin_port, "metrics_port": 0}}, "mesh_tls": {"mode": "plaintext"}}
        edge = build_edge(parse_config(edge_cfg, env={}))
        port = await edge.start("127.0.0.1", 0)
        stack.push_async_callback(edge.stop, 0)
        rest = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60))
        yield Admin(stub, rest, bearer(token), bearer(user))


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize("level", [1, 2])
async def test_admin_sleeps_and_wakes_a_vllm_backend(admin: Admin, vllm_routes: str, level: int) -> None:  # noqa: F811
    before = len(standin(vllm_routes)["calls"])

    asleep = await admin.stub.SleepBackend(
        admin_pb2.SleepBackendRequest(backend="gpu-0", level=level), metadata=admin.md, timeout=60
    )
    weights_asleep = standin(vllm_routes)["weights"]
    woken = await admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend="gpu-0"), metadata=admin.md, timeout=60)

    assert asleep.outcome == f"asleep at level {level}: tiny"
    assert (asleep.status.backend, asleep.status.state) == ("gpu-0", common_pb2.BACKEND_STATE_SLEEPING)
    assert asleep.elapsed_ms > 0
    assert weights_asleep == ("offloaded" if level == 1 else "discarded")
    assert woken.outcome == "woken: tiny"
    assert (woken.status.state, list(woken.status.loaded_models)) == (common_pb2.BACKEND_STATE_READY, ["tiny"])
    wake = (
        ["wake_up tags=all"] if level == 1 else ["wake_up tags=weights", "collective_rpc reload_weights", "wake_up tags=kv_cache"]
    )
    assert standin(vllm_routes)["calls"][before:] == [f"sleep level={level} mode=abort", *wake]
    assert standin(vllm_routes)["weights"] == "loaded"


async def test_level_0_means_1_and_waking_an_awake_backend_says_so(admin: Admin, vllm_routes: str) -> None:  # noqa: F811
    asleep = await admin.stub.SleepBackend(admin_pb2.SleepBackendRequest(backend="gpu-0"), metadata=admin.md, timeout=60)
    await admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend="gpu-0"), metadata=admin.md, timeout=60)
    again = await admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend="gpu-0"), metadata=admin.md, timeout=60)

    assert asleep.outcome == "asleep at level 1: tiny"
    assert again.outcome == "nothing was asleep"


@pytest.mark.parametrize(
    ("backend", "words"),
    [("cpu-0", "it needs engine vllm with sleep_mode: true"), ("ocr-0", "OCR engine tesseract does not sleep")],
)
async def test_backends_without_sleep_mode_refuse_with_the_reason(admin: Admin, backend: str, words: str) -> None:
    for call in (
        admin.stub.SleepBackend(admin_pb2.SleepBackendRequest(backend=backend, level=1), metadata=admin.md, timeout=30),
        admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend=backend), metadata=admin.md, timeout=30),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert str(err.details()).startswith(f"backend {backend} has no sleep mode (")
        assert words in str(err.details())


async def test_bad_requests_and_callers_are_refused_and_change_nothing(admin: Admin, vllm_routes: str) -> None:  # noqa: F811
    calls = len(standin(vllm_routes)["calls"])

    unknown = await refused(admin.stub.SleepBackend(admin_pb2.SleepBackendRequest(backend="gpu-9"), metadata=admin.md))
    wake_unknown = await refused(admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend="gpu-9"), metadata=admin.md))
    level = await refused(admin.stub.SleepBackend(admin_pb2.SleepBackendRequest(backend="gpu-0", level=3), metadata=admin.md))
    user = await refused(admin.stub.SleepBackend(admin_pb2.SleepBackendRequest(backend="gpu-0"), metadata=admin.user_md))
    anonymous = await refused(admin.stub.WakeBackend(admin_pb2.WakeBackendRequest(backend="gpu-0")))

    assert (unknown.code(), unknown.details()) == (grpc.StatusCode.NOT_FOUND, "no backend named 'gpu-9'")
    assert wake_unknown.code() == grpc.StatusCode.NOT_FOUND
    assert (level.code(), bad_field(level)) == (grpc.StatusCode.INVALID_ARGUMENT, "level")
    assert "level" in str(level.details())
    assert user.code() == grpc.StatusCode.PERMISSION_DENIED
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(standin(vllm_routes)["calls"]) == calls


async def test_the_rest_paths_the_console_calls(admin: Admin, vllm_routes: str) -> None:  # noqa: F811
    headers = {"authorization": admin.md[0][1]}

    asleep = await admin.rest.post("/admin/backends/gpu-0/sleep", json={"level": 2}, headers=headers)
    woken = await admin.rest.post("/admin/backends/gpu-0/wake", json={}, headers=headers)
    no_sleep = await admin.rest.post("/admin/backends/ocr-0/sleep", json={}, headers=headers)
    unknown = await admin.rest.post("/admin/backends/gpu-9/wake", json={}, headers=headers)
    bad_level = await admin.rest.post("/admin/backends/gpu-0/sleep", json={"level": 7}, headers=headers)
    anonymous = await admin.rest.post("/admin/backends/gpu-0/sleep", json={})

    assert asleep.status_code == 200, asleep.text
    assert set(asleep.json()) == {"outcome", "elapsed_ms", "status"}
    assert (asleep.json()["outcome"], asleep.json()["status"]["state"]) == ("asleep at level 2: tiny", "BACKEND_STATE_SLEEPING")
    assert woken.status_code == 200, woken.text
    assert (woken.json()["outcome"], woken.json()["status"]["state"]) == ("woken: tiny", "BACKEND_STATE_READY")
    assert standin(vllm_routes)["weights"] == "loaded"
    assert no_sleep.status_code == 400
    assert no_sleep.json()["message"].startswith("backend ocr-0 has no sleep mode (")
    assert unknown.status_code == 404
    assert bad_level.status_code == 400
    assert bad_level.json()["details"][0]["field_violations"][0]["field"] == "level"
    assert anonymous.status_code == 401
