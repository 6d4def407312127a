"""Server streams through the edge: SSE events flushed one by one, raw HttpBody chunks, errors, client disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from google.rpc import code_pb2

from tests.integration.edge.conftest import Running


async def test_stream_is_sse_with_one_event_per_message(running: Running) -> None:
    r = await running.client.post("/v1/count", json={"count": 3})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-request-id"]
    assert r.text == 'data: {"index":1}\n\ndata: {"index":2}\n\ndata: {"index":3}\n\n'


async def test_each_event_is_flushed_when_it_happens(running: Running) -> None:
    start = time.monotonic()
    async with running.client.stream("POST", "/v1/count", json={"count": 3, "interval_seconds": 0.4}) as r:
        arrivals = []
        async for chunk in r.aiter_raw():
            arrivals.append((time.monotonic() - start, chunk))
    assert [c for _, c in arrivals] == [b'data: {"index":%d}\n\n' % i for i in (1, 2, 3)]
    assert arrivals[2][0] - arrivals[0][0] > 0.6


async def test_streamed_http_body_passes_through_raw(running: Running) -> None:
    r = await running.client.post("/v1/chunks", json={"count": 2})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content == b'data: {"i":1}\n\ndata: {"i":2}\n\ndata: [DONE]\n\n'


async def test_an_error_before_the_first_event_is_an_http_error(running: Running) -> None:
    r = await running.client.post("/v1/count", json={"count": -1})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == code_pb2.INVALID_ARGUMENT
    assert body["message"] == "count must not be negative"
    violation = body["details"][0]["field_violations"][0]
    assert (violation["field"], violation["description"]) == ("count", "count must not be negative")


async def test_an_error_after_events_ends_the_sse_stream_with_an_error_event(running: Running) -> None:
    r = await running.client.post("/v1/count", json={"count": 5, "fail_after": 2})
    assert r.status_code == 200
    events = r.text.split("\n\n")
    assert events[:2] == ['data: {"index":1}', 'data: {"index":2}']
    kind, data = events[2].split("\n")
    assert kind == "event: error"
    status = orjson.loads(data.removeprefix("data: "))
    assert (status["code"], status["message"]) == (code_pb2.UNAVAILABLE, "the backend went away")


async def test_an_error_in_a_raw_stream_leaves_it_visibly_incomplete(running: Running) -> None:
    received = b""
    async with running.client.stream("POST", "/v1/chunks", json={"count": 5, "fail_after": 1}) as r:
        try:
            async for chunk in r.aiter_raw():
                received += chunk
            completed = True
        except httpx.RemoteProtocolError:
            completed = False
    assert received == b'data: {"i":1}\n\n'
    assert not completed


async def test_client_disconnect_cancels_the_upstream_stream(running: Running) -> None:
    async with running.client.stream("POST", "/v1/count", json={"count": 100, "interval_seconds": 0.05}) as r:
        async for _ in r.aiter_raw():
            break
    await asyncio.wait_for(running.service.cancelled.wait(), 5)


async def test_client_disconnect_cancels_a_unary_call(running: Running) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await running.client.post("/v1/fail", json={"code": "NOT_FOUND", "delay_seconds": 30}, timeout=0.3)
    await asyncio.wait_for(running.service.cancelled.wait(), 5)


async def test_keep_alive_connection_serves_a_request_after_a_stream(running: Running) -> None:
    first = await running.client.post("/v1/count", json={"count": 2})
    second = await running.client.get("/v1/messages/1")
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(running.edge.server.state.connections) == 1
