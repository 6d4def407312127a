"""A DeepSeek-OCR model server that segfaults at start: its crash reaches the crash log, as admin ListCrashes shows it.

The engine command is a real process that kills itself with SIGSEGV before it ever answers, standing in
for a vLLM build that crashes while loading; the ocr service, the queue (on FerretDB) and admin are real.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw_server.admin.service import AdminService
from aigw_server.ocr.service import build as build_ocr
from aigw_server.queue.service import build as build_queue
from aigw_server.runtime.config import parse_config
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.admin.helpers import READY_SECONDS, bearer, raw_config, serve

pytestmark = pytest.mark.timeout(120)

SEGFAULT = "import os, signal, sys\nprint('loading weights', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n"


def config(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path, queue: str = "", ocr: str = "") -> dict[str, Any]:
    script = tmp_path / "segfault.py"
    script.write_text(SEGFAULT)
    raw = raw_config(
        ferretdb.uri,
        db_name,
        tmp_path,
        models={"deepseek-ocr": {"kind": "ocr", "path": "deepseek-ai/DeepSeek-OCR"}},
        backends=[
            {
                "name": "gpu-ocr-0",
                "kind": "ocr",
                "engine": "deepseek-ocr",
                "command": [sys.executable, str(script)],
                "port": free_port(),
                "models": ["deepseek-ocr"],
                "startup_timeout_seconds": 30,
                "address": ocr,
            }
        ],
    )
    if queue:
        raw["services"] = {**raw["services"], "queue": {"port": int(queue.rsplit(":", 1)[1]), "metrics_port": 0}}
    return raw


async def crashes(admin: Any, md: tuple[tuple[str, str], ...], count: int) -> list[admin_pb2.CrashEvent]:
    """The ocr service's crash events once at least `count` have arrived (newest first)."""
    deadline = time.monotonic() + 30
    while True:
        reply = await admin.ListCrashes(admin_pb2.ListCrashesRequest(service="ocr"), metadata=md, timeout=10)
        if len(reply.events) >= count:
            return list(reply.events)
        assert time.monotonic() < deadline, f"{len(reply.events)} crash events after 30 s, expected {count}"
        await asyncio.sleep(0.2)


async def test_a_model_server_that_segfaults_at_start_is_in_the_crash_log(
    ferretdb: FerretDBProcess, db_name: str, tmp_path: Path
) -> None:
    async with serve(build_queue(parse_config(config(ferretdb, db_name, tmp_path), env={}))) as queue:
        ocr_service = build_ocr(parse_config(config(ferretdb, db_name, tmp_path, queue.address), env={}))
        async with serve(ocr_service) as ocr:
            await ocr_service.wait_loaded()  # the initial load fails: the server died at start
            admin_service = AdminService(parse_config(config(ferretdb, db_name, tmp_path, queue.address, ocr.address), env={}))
            async with serve(admin_service) as running:
                await asyncio.wait_for(admin_service.ready.wait(), READY_SECONDS)
                admin = admin_pb2_grpc.AdminServiceStub(running.channel)
                password = raw_config("", "", tmp_path)["auth"]["admin_password"]
                login = await admin.IssueToken(admin_pb2.IssueTokenRequest(username="admin", password=password))
                md = bearer(login.access_token)

                [first] = await crashes(admin, md, 1)
                with pytest.raises(grpc.aio.AioRpcError) as start:
                    await admin.StartModel(admin_pb2.StartModelRequest(model="deepseek-ocr"), metadata=md, timeout=60)
                second = (await crashes(admin, md, 2))[0]
                listed = await admin.ListModels(admin_pb2.ListModelsRequest(), metadata=md, timeout=10)

    message = "the model server for 'deepseek-ocr' exited during startup (code -11, signal SIGSEGV)"
    assert (first.kind, first.service, first.backend, first.model) == (
        admin_pb2.CRASH_KIND_BACKEND_CRASH,
        "ocr",
        "gpu-ocr-0",
        "deepseek-ocr",
    )
    assert first.message == message
    assert (first.details["exit_code"], first.details["signal"]) == ("-11", "SIGSEGV")
    assert "loading weights" in list(first.log_tail)
    assert start.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "exited during startup (code -11, signal SIGSEGV)" in str(start.value.details())
    assert (second.message, second.id != first.id) == (message, True)
    [backend] = listed.backends
    assert (backend.status.state, backend.status.detail) == (common_pb2.BACKEND_STATE_IDLE, message)
