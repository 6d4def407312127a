"""Supervision of a real (stand-in) server process: failed starts, crashes, failing restarts, backoff, records."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aigw_server.runtime.config import parse_config
from aigw_server.runtime.errors import Unavailable
from aigw_server.textgen.backend import TextgenBackend
from aigw_server.textgen.model_server import ServerState
from aigw_server.textgen.settings import resolve_settings
from tests.helpers import free_port

STANDIN = Path(__file__).with_name("standin_server.py")

pytestmark = pytest.mark.timeout(60)


class CrashLog:
    """Keeps the events the backend records."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, list[str]]] = []

    def record(self, kind: str, model: str, message: str, log_tail: Any = (), details: Any = None) -> None:
        self.events.append((kind, message, list(log_tail)))


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[tuple[TextgenBackend, CrashLog, Path]]:
    fail_file = tmp_path / "fail"
    raw = {
        "mesh_tls": {"mode": "plaintext"},
        "models": {"standin": {}},
        "backends": [
            {
                "name": "sup-0",
                "kind": "textgen",
                "engine": "openai",
                "port": free_port(),
                "command": [sys.executable, str(STANDIN), "{port}", str(fail_file)],
                "models": ["standin"],
                "startup_timeout_seconds": 20,
            }
        ],
    }
    crash_log = CrashLog()
    textgen = TextgenBackend(resolve_settings(parse_config(raw, env={}), {}), crash_log)

    async def notify(serving: bool) -> None:
        return None

    await textgen.start(notify)
    yield textgen, crash_log, fail_file
    await textgen.stop()


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.02)


async def test_a_server_that_fails_to_start_says_why(backend: tuple[TextgenBackend, CrashLog, Path]) -> None:
    textgen, _, fail_file = backend
    fail_file.touch()

    with pytest.raises(Unavailable, match="exited during startup"):
        await textgen.load("standin")

    snap = textgen.snapshot()
    assert (snap.state, snap.loaded_models) == (ServerState.IDLE, [])
    assert "exited during startup with code 3: standin: refusing to start while fail exists" in snap.detail


async def test_crashes_restart_with_backoff_until_a_start_succeeds(backend: tuple[TextgenBackend, CrashLog, Path]) -> None:
    textgen, crash_log, fail_file = backend
    assert await textgen.load("standin") == "loaded"
    server = textgen.server_of("standin")
    assert server is not None
    assert server.process is not None
    fail_file.touch()

    os.kill(server.process.pid, signal.SIGKILL)
    await until(lambda: len(crash_log.events) >= 2, "the crash and a failed restart recorded")
    crashed = textgen.snapshot()
    fail_file.unlink()
    await until(lambda: textgen.snapshot().state is ServerState.READY, "READY again")

    assert (crashed.state, crashed.loaded_models) == (ServerState.CRASHED, [])
    assert "restarting in" in crashed.detail

    kinds = [kind for kind, _, _ in crash_log.events]
    assert kinds[0] == "BACKEND_CRASH"
    assert "exited with code -9" in crash_log.events[0][1]
    assert "standin: serving on" in crash_log.events[0][2][-1]
    assert kinds[1] == "BACKEND_CRASH"
    assert "restart 1 failed: exited during startup with code 3" in crash_log.events[1][1]
    assert kinds[-1] == "ENGINE_RESTART"
    assert textgen.snapshot().restarts == len(kinds) - 1
    assert textgen.snapshot().loaded_models == ["standin"]
