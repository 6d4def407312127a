"""The upstream HTTP client against a real local server: error mapping, SSE streams, keep-alive reuse of one connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from aigw_server.engines.openai_http import EngineClient
from aigw_server.runtime.errors import GatewayError, InvalidArgument, Unavailable
from tests.helpers import free_port
from tests.unit.http_peer import HttpPeer

BODY = {"model": "/models/llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "Hey"}, "finish_reason": "stop"}]}


_opened: list[EngineClient] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while _opened:
        await _opened.pop().aclose()


def client(handler: Callable[[httpx.Request], httpx.Response]) -> EngineClient:
    upstream = EngineClient(HttpPeer(handler).url, capacity=4, timeout=5.0)
    _opened.append(upstream)
    return upstream


async def failure(response: httpx.Response, stream: bool = False) -> GatewayError:
    upstream = client(lambda request: response)
    with pytest.raises(GatewayError) as err:
        if stream:
            async for _ in upstream.stream_chat(BODY, {}, "/models/llama", "llama"):
                pass
        else:
            await upstream.chat(BODY, {}, "/models/llama", "llama")
    return err.value


async def test_a_chat_posts_json_with_the_request_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    answer = await client(handler).chat(BODY, {"x-request-id": "r-1"})

    assert answer == ANSWER
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/chat/completions")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-request-id"] == "r-1"
    assert orjson.loads(request.content) == BODY


async def test_a_rejected_parameter_is_invalid_argument_without_internal_names() -> None:
    vllm = {"object": "error", "message": "max_tokens is too large for /models/llama:\n 9999 > 4096", "code": 400}
    err = await failure(httpx.Response(400, json={"error": vllm}))

    assert isinstance(err, InvalidArgument)
    assert err.message == "the model server rejected the request: max_tokens is too large for llama:  9999 > 4096"


async def test_fastapi_validation_details_are_joined_and_bounded() -> None:
    detail = [{"loc": ["body", "top_p"], "msg": "Input should be less than or equal to 1"}, {"msg": "x" * 500}]
    err = await failure(httpx.Response(422, json={"detail": detail}))

    assert isinstance(err, InvalidArgument)
    assert "Input should be less than or equal to 1; xxx" in err.message
    assert len(err.message) < 400


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (500, "failed (HTTP 500)"),
        (503, "failed (HTTP 503)"),
        (404, "does not serve model 'llama'"),
        (429, "overloaded"),
        (401, "credentials"),
    ],
)
async def test_server_side_failures_are_unavailable(status: int, words: str) -> None:
    err = await failure(httpx.Response(status, text="Traceback (most recent call last): secret internals"))

    assert isinstance(err, Unavailable)
    assert words in err.message
    assert "secret" not in err.message


async def test_connection_failures_and_timeouts_are_unavailable() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the request, never answers
        writer.close()

    refused = EngineClient(f"http://127.0.0.1:{free_port()}", capacity=4, timeout=5.0)
    with pytest.raises(Unavailable, match="not accepting connections"):
        await refused.chat(BODY, {})
    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    slow = EngineClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", capacity=4, timeout=0.25)
    with pytest.raises(Unavailable, match=r"did not answer within 0\.25s"):
        await slow.chat(BODY, {})
    await slow.aclose()
    server.close()


def sse(*events: object) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\r\n\r\n" for e in events)


async def test_a_stream_yields_each_chunk_until_done() -> None:
    chunks = [
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"content": "He"}}]},
        {"choices": [{"delta": {"content": "y"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]
    body = sse(*chunks, b"[DONE]", {"never": "read"})
    upstream = client(lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    got = [event async for event in upstream.stream_chat({**BODY, "stream": True}, {})]

    assert got == chunks


async def test_an_error_event_inside_a_stream_is_mapped() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "a"}}]}, {"error": {"message": "prompt too long for /models/llama", "code": 400}}
    )

    err = await failure(httpx.Response(200, content=body), stream=True)

    assert isinstance(err, InvalidArgument)
    assert "prompt too long for llama" in err.message


async def test_a_malformed_chunk_or_status_error_ends_a_stream_unavailable() -> None:
    assert isinstance(await failure(httpx.Response(200, content=b"data: {not json\n\n"), stream=True), Unavailable)
    assert isinstance(await failure(httpx.Response(502, content=b"bad gateway"), stream=True), Unavailable)


async def test_control_endpoints_report_a_missing_dev_mode_clearly() -> None:
    upstream = client(lambda request: httpx.Response(404, json={"detail": "Not Found"}))

    with pytest.raises(Unavailable, match="no such endpoint"):
        await upstream.control("POST", "/sleep", {"level": 1})


class CountingServer:
    """A minimal HTTP/1.1 keep-alive server that counts the TCP connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        payload = orjson.dumps(ANSWER)
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            self.requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingServer, str]]:
    peer = CountingServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await peer.handle(reader, writer)
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield peer, f"http://127.0.0.1:{port}"
    server.close()


async def test_sequential_requests_reuse_one_keep_alive_connection(counting: tuple[CountingServer, str]) -> None:
    peer, url = counting
    upstream = EngineClient(url, capacity=4, timeout=5.0)

    for _ in range(20):
        assert await upstream.chat(BODY, {}) == ANSWER
    await upstream.aclose()

    assert (peer.requests, peer.connections) == (20, 1)
