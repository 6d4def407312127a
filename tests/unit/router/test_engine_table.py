"""The router's table of directly called engines: routes, reachability, refresh and client reuse."""

from __future__ import annotations

import asyncio

import pytest

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw_server.engines.openai_http import EngineClient
from aigw_server.router.clients import BackendClient
from aigw_server.router.engines import EngineTable, reachable, status_fingerprint
from aigw_server.runtime.config import BackendConfig
from aigw_server.runtime.errors import Unavailable
from tests.helpers import free_port

MADE: list[tuple[str, str]] = []
URL_OF: dict[EngineClient, str] = {}


def factory(base_url: str, api_key: str, capacity: int, timeout: float) -> EngineClient:
    MADE.append((base_url, api_key))
    client = EngineClient(base_url, capacity=capacity, timeout=timeout, api_key=api_key)
    URL_OF[client] = base_url
    return client


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


async def test_engines_advertised_at_pod_addresses_are_called_directly_and_follow_their_pod() -> None:
    """A textgen pod answers with its engine at the pod's IP: reachable from every router, refreshed when it moves."""
    MADE.clear()
    table = EngineTable("textgen-0.textgen:50053", factory)
    assert not reachable("http://127.0.0.1:8000", "textgen-0.textgen:50053"), "loopback in the pod: through textgen"
    assert reachable("http://10.244.1.9:8000", "textgen-0.textgen:50053")
    assert reachable("http://[fd00::9]:8000", "textgen-0.textgen:50053")

    status = common_pb2.BackendStatus(state=common_pb2.BACKEND_STATE_READY, loaded_models=["llama"], restarts=0)
    table.update(status_fingerprint(status), [engine("http://10.244.1.9:8000", "k", "llama")])
    route = table.acquire("llama")
    assert route is not None
    assert URL_OF[route.client] == "http://10.244.1.9:8000"
    table.release(route)
    assert table.acquire("qwen") is None, "a model the engine does not hold is never sent there"

    # The pod is replaced (same name, same status, a new IP): a failed poll or call makes the router ask again.
    table.invalidate()
    assert table.needs_refresh(status_fingerprint(status))
    table.update(status_fingerprint(status), [engine("http://10.244.2.4:8000", "k", "llama", "qwen")])
    moved = table.acquire("qwen")
    assert moved is not None
    assert URL_OF[moved.client] == "http://10.244.2.4:8000"
    table.release(moved)
    assert table.closable() == [route.client], "the gone pod's client is closed"
    assert MADE == [("http://10.244.1.9:8000", "k"), ("http://10.244.2.4:8000", "k")]
    await asyncio.gather(*(c.aclose() for c in [*table.all_clients(), route.client]))


async def test_a_backend_that_stops_answering_has_its_engines_read_again() -> None:
    """A replaced pod answers with the same status as the old one: the failed poll alone tells the engines may be new."""
    port = free_port()
    client = BackendClient(BackendConfig(name="textgen-0", address=f"127.0.0.1:{port}"), direct=True)
    assert client.engines is not None
    client.engines.make_client = factory
    client.engines.update(("ready",), [engine("http://10.244.1.9:8000", "k", "llama")])
    assert len(client.engines.all_clients()) == 1
    try:
        with pytest.raises(Unavailable):
            await client.status()
        assert client.engines.acquire("llama") is None, "the gone pod's engine is dropped"
        assert client.engines.all_clients() == [], "and its client closed (no call used it)"
        assert client.engines.needs_refresh(("ready",))
    finally:
        await client.close()
