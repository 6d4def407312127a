"""textgen's sleep and wake sequences against vLLM's real sleep/wake HTTP routes (levels 1 and 2)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigw.common.v1 import common_pb2
from aigw_server.runtime.config import parse_config
from aigw_server.textgen.backend import TextgenBackend
from aigw_server.textgen.model_server import ServerState
from aigw_server.textgen.settings import resolve_settings
from tests.helpers import free_port
from tests.integration.vllm.helpers import VLLM_PYTHON

pytestmark = pytest.mark.timeout(900)

SERVER = Path(__file__).with_name("sleep_server.py")


class CrashLog:
    def record(self, kind: str, model: str, message: str, log_tail: Any = (), details: Any = None) -> None:
        """Sleeping is no crash: nothing is expected here."""


@pytest.fixture(scope="module")
def vllm_routes() -> Iterator[str]:
    """vLLM's sleep, wake and collective_rpc routes with the stand-in engine behind them."""
    port = free_port()
    proc = subprocess.Popen([str(VLLM_PYTHON), str(SERVER), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            assert time.monotonic() < deadline, "vLLM's routes did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
async def backend(vllm_routes: str) -> AsyncIterator[TextgenBackend]:
    raw = {
        "models": {"tiny": {}},
        "backends": [
            {"name": "gpu-0", "kind": "textgen", "engine": "vllm", "mode": "attach", "url": vllm_routes}
            | {"models": ["tiny"], "sleep_mode": True}
        ],
    }
    backend = TextgenBackend(resolve_settings(parse_config(raw, env={}), {}), CrashLog())

    async def notify(serving: bool) -> None:
        """Health changes are not under test here."""

    await backend.start(notify)
    yield backend
    await backend.stop()


def standin(url: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{url}/standin/state").json()
    return state


def chat() -> common_pb2.ChatJob:
    return common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="Hi")])


@pytest.mark.parametrize("level", [1, 2])
async def test_textgen_sleeps_and_wakes_to_a_model_with_its_weights(
    backend: TextgenBackend, vllm_routes: str, level: int
) -> None:
    before = len(standin(vllm_routes)["calls"])

    await backend.sleep(level)
    asleep = standin(vllm_routes)
    outcome = await backend.load("tiny")
    awake = standin(vllm_routes)
    answer = await backend.generate("tiny", chat(), common_pb2.PRIORITY_NORMAL, "r-1")

    assert asleep["asleep"] == ["kv_cache", "weights"]
    assert asleep["weights"] == ("offloaded" if level == 1 else "discarded")
    assert outcome == "woken"
    assert (awake["asleep"], awake["weights"]) == ([], "loaded")
    expected = {
        1: [f"sleep level={level} mode=abort", "wake_up tags=all"],
        2: [f"sleep level={level} mode=abort", "wake_up tags=weights", "collective_rpc reload_weights", "wake_up tags=kv_cache"],
    }
    assert awake["calls"][before:] == expected[level]
    assert answer.message.content == "sensible text"
    assert backend.snapshot().state is ServerState.READY


async def test_a_bare_wake_after_level_2_would_serve_garbage(backend: TextgenBackend, vllm_routes: str) -> None:
    """What the stand-in guards against: the wake call textgen made before it knew the level-2 sequence."""
    await backend.sleep(2)
    async with httpx.AsyncClient(base_url=vllm_routes) as client:
        assert (await client.post("/wake_up")).json()["status"] == "awake"
        reply = await client.post("/v1/chat/completions", json={"messages": []})
    assert reply.json()["choices"][0]["message"]["content"] == "garbage from uninitialised weights"
    # textgen still believes it sleeps; waking it the right way repairs the weights.
    await backend.wake()
    assert standin(vllm_routes)["weights"] == "loaded"


async def test_vllms_routes_refuse_a_level_it_does_not_have(vllm_routes: str) -> None:
    async with httpx.AsyncClient(base_url=vllm_routes) as client:
        reply = await client.post("/sleep", params={"level": 3})

    assert reply.status_code == 422
