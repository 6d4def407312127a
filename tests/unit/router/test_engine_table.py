"""The router's table of directly called engines: routes, reachability, refresh and client reuse."""

from __future__ import annotations

import asyncio

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw_server.engines.openai_http import EngineClient
from aigw_server.router.engines import EngineTable, reachable, status_fingerprint

MADE: list[tuple[str, str]] = []


def factory(base_url: str, api_key: str, capacity: int, timeout: float) -> EngineClient:
    MADE.append((base_url, api_key))
    return EngineClient(base_url, capacity=capacity, timeout=timeout, api_key=api_key)


def engine(url: str, key: str = "k", *models: str, priority: bool = True) -> backend_pb2.Engine:
    return backend_pb2.Engine(
        base_url=url,
        engine="vllm",
        models=[backend_pb2.EngineModel(model=m, served_name=f"served/{m}", default_max_tokens=64) for m in models],
        priority_scheduling=priority,
        stream_usage=True,
        api_key=key,
        request_timeout_seconds=30,
        capacity=4,
    )


def test_loopback_engines_are_reached_only_beside_their_textgen() -> None:
    assert reachable("http://127.0.0.1:8200", "127.0.0.1:50053")
    assert reachable("http://localhost:8200", "localhost:50053")
    assert reachable("http://[::1]:8200", "[::1]:50053")
    assert not reachable("http://127.0.0.1:8200", "textgen:50053")
    assert reachable("http://vllm:8000", "textgen:50053")
    assert reachable("http://10.0.0.7:8000", "127.0.0.1:50053")
    assert not reachable("not a url", "127.0.0.1:50053")


async def test_routes_carry_what_textgen_applies() -> None:
    table = EngineTable("127.0.0.1:50053", factory)
    table.update(1, [engine("http://127.0.0.1:8200", "k", "llama", "qwen", priority=False)])

    route = table.acquire("llama")
    assert route is not None
    assert (route.target.upstream_name, route.target.default_max_tokens, route.target.priority_scheduling) == (
        "served/llama",
        64,
        False,
    )
    other = table.acquire("qwen")
    assert other is not None
    assert other.client is route.client
    assert table.acquire("other") is None
    await route.client.aclose()


def test_an_unreachable_engine_leaves_the_call_to_textgen() -> None:
    table = EngineTable("textgen:50053", factory)
    table.update(1, [engine("http://127.0.0.1:8200", "k", "llama")])
    assert table.acquire("llama") is None


async def test_a_status_change_refreshes_and_a_new_key_retires_the_old_client_once_unused() -> None:
    MADE.clear()
    table = EngineTable("127.0.0.1:50053", factory)
    status = common_pb2.BackendStatus(state=common_pb2.BACKEND_STATE_READY, loaded_models=["llama"], restarts=0)
    first = status_fingerprint(status)
    table.update(first, [engine("http://127.0.0.1:8200", "k1", "llama")])
    assert not table.needs_refresh(status_fingerprint(status))
    status.restarts = 1
    assert table.needs_refresh(status_fingerprint(status))

    running = table.acquire("llama")
    assert running is not None
    table.update(status_fingerprint(status), [engine("http://127.0.0.1:8200", "k2", "llama")])
    assert MADE == [("http://127.0.0.1:8200", "k1"), ("http://127.0.0.1:8200", "k2")]
    assert table.closable() == []  # a call still uses the old client
    table.release(running)
    assert table.closable() == [running.client]
    assert table.closable() == []

    table.update(status_fingerprint(status), [engine("http://127.0.0.1:8200", "k2", "llama")])
    assert len(MADE) == 2  # same URL and key: the pooled client is kept
    table.invalidate()
    assert table.needs_refresh(status_fingerprint(status))
    await asyncio.gather(*(c.aclose() for c in [*table.all_clients(), running.client]))
