"""The lean HTTP/1.1 client against real local servers: keep-alive pooling, body framings, closes, timeouts, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import uvloop

from aigw_server.engines import http1
from aigw_server.engines.openai_http import EngineClient
from aigw_server.runtime.errors import Unavailable
from aigw_server.runtime.pki import issue, new_ca, write_identity
from tests.helpers import free_port


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on asyncio's own loop and on uvloop's (what the services run on)."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# Answers one request; returns whether the connection stays open for the next.
Respond = Callable[[Seen, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}content-length: {len(body)}\r\n\r\n".encode() + body


async def ok(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b"ok:" + seen.body))
    return True


class Peer:
    """A raw HTTP/1.1 server whose answers a test scripts; it counts connections and notes when each ended."""

    def __init__(self, respond: Respond = ok) -> None:
        self.respond = respond
        self.connections = 0
        self.requests: list[Seen] = []
        self.ended: list[float] = []  # time.monotonic() when each connection was seen closed
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                first, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = first.split(" ")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, path, headers, body)
                self.requests.append(seen)
                keep = await self.respond(seen, reader, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended.append(time.monotonic())
            writer.close()


@pytest.fixture
async def served() -> AsyncIterator[Callable[[Respond], Awaitable[tuple[Peer, str]]]]:
    peers: list[Peer] = []

    async def serve(respond: Respond = ok) -> tuple[Peer, str]:
        peer = Peer(respond)
        peers.append(peer)
        return peer, await peer.start()

    yield serve
    for peer in peers:
        await peer.close()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., http1.Pool]]:
    made: list[http1.Pool] = []

    def pool(url: str, max_idle: int = 8, idle_expiry: float = 60.0, ssl_context: ssl.SSLContext | None = None) -> http1.Pool:
        made.append(http1.Pool(url, max_idle=max_idle, idle_expiry=idle_expiry, ssl_context=ssl_context))
        return made[-1]

    yield pool
    for p in made:
        await p.aclose()


Served = Callable[[Respond], Awaitable[tuple[Peer, str]]]
Pools = Callable[..., http1.Pool]


async def post(pool: http1.Pool, body: bytes = b"hi", timeout: float = 5.0) -> tuple[int, bytes]:
    async with await pool.request("POST", "/v1/chat/completions", {"x-request-id": "r-1"}, body, timeout=timeout) as resp:
        return resp.status, await resp.read()


async def test_sequential_requests_share_one_connection(served: Served, pools: Pools) -> None:
    peer, url = await served(ok)
    pool = pools(url)

    for i in range(10):
        assert await post(pool, b"%d" % i) == (200, b"ok:%d" % i)

    assert (peer.connections, len(peer.requests), pool.idle_connections) == (1, 10, 1)
    seen = peer.requests[0]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert (seen.headers["host"], seen.headers["x-request-id"], seen.headers["content-length"]) == (
        url.removeprefix("http://"),
        "r-1",
        "1",
    )


async def test_concurrent_requests_open_connections_and_keep_at_most_max_idle(served: Served, pools: Pools) -> None:
    async def slow(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await ok(seen, reader, writer)

    peer, url = await served(slow)
    pool = pools(url, max_idle=4)

    assert len(await asyncio.gather(*(post(pool) for _ in range(10)))) == 10
    await asyncio.sleep(0.05)

    assert (peer.connections, pool.idle_connections, pool.busy_connections, len(peer.ended)) == (10, 4, 0, 6)
    await asyncio.gather(*(post(pool) for _ in range(4)))
    assert peer.connections == 10, "the idle ones were reused"


async def test_chunked_bodies_are_dechunked_and_the_connection_reused(served: Served, pools: Pools) -> None:
    async def chunked(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"chunked ", b"world"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    peer, url = await served(chunked)
    pool = pools(url)

    assert await post(pool) == (200, b"hello chunked world")
    assert await post(pool) == (200, b"hello chunked world")
    assert peer.connections == 1


async def test_a_body_delimited_by_the_close_is_read_whole_and_not_reused(served: Served, pools: Pools) -> None:
    async def until_close(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"it")
        return False

    peer, url = await served(until_close)
    pool = pools(url)

    assert await post(pool) == (200, b"all of it")
    assert await post(pool) == (200, b"all of it")
    assert (peer.connections, pool.idle_connections) == (2, 0)


async def test_connection_close_is_honoured(served: Served, pools: Pools) -> None:
    async def closing(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"bye", "connection: close"))
        await asyncio.sleep(0.05)  # the client must not wait for our close to treat the body as ended
        return False

    peer, url = await served(closing)
    pool = pools(url)

    assert await post(pool) == (200, b"bye")
    assert pool.idle_connections == 0
    assert await post(pool) == (200, b"bye")
    assert peer.connections == 2


async def test_an_idle_connection_the_server_closed_is_never_handed_out(served: Served, pools: Pools) -> None:
    async def once(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"ok"))
        return False  # claims keep-alive, then closes while the client holds it idle

    peer, url = await served(once)
    pool = pools(url)

    assert await post(pool) == (200, b"ok")
    await asyncio.sleep(0.05)
    assert await post(pool) == (200, b"ok")
    assert (peer.connections, len(peer.requests)) == (2, 2)


async def test_idle_connections_expire(served: Served, pools: Pools) -> None:
    peer, url = await served(ok)
    pool = pools(url, idle_expiry=0.05)

    await post(pool)
    await asyncio.sleep(0.1)
    await post(pool)

    assert peer.connections == 2
    await asyncio.sleep(0.05)
    assert len(peer.ended) == 1, "the expired one was closed"


def sse_forever(events: list[float]) -> Respond:
    """Streams SSE chunks every 10 ms until the client goes; notes when the server saw it go."""

    async def stream(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"data: " + orjson.dumps({"choices": [{"delta": {"content": "x"}}]}) + b"\n\n"
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            try:
                await writer.drain()
                if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        events.append(time.monotonic())
        return False

    return stream


async def test_leaving_a_stream_early_closes_its_connection_at_once(served: Served) -> None:
    gone: list[float] = []
    _, url = await served(sse_forever(gone))
    client = EngineClient(url, capacity=4, timeout=5.0)

    stream = client.stream_chat({"stream": True}, {})
    for _ in range(3):
        await anext(stream)
    left = time.monotonic()
    await stream.aclose()
    while not gone and time.monotonic() - left < 1:
        await asyncio.sleep(0.005)

    assert gone, "the server saw the client go"
    assert gone[0] - left < 0.1, "within 100 ms"
    await client.aclose()


async def test_cancelling_a_stream_closes_its_connection(served: Served) -> None:
    gone: list[float] = []
    _, url = await served(sse_forever(gone))
    client = EngineClient(url, capacity=4, timeout=5.0)

    async def consume() -> None:
        async for _ in client.stream_chat({"stream": True}, {}):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    left = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    while not gone and time.monotonic() - left < 1:
        await asyncio.sleep(0.005)

    assert gone
    assert gone[0] - left < 0.1
    await client.aclose()


async def test_a_refused_connection_is_connect_failed(pools: Pools) -> None:
    pool = pools(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(http1.ConnectFailed):
        await post(pool)


async def test_a_server_silent_before_or_during_its_answer_times_out(served: Served, pools: Pools) -> None:
    async def silent(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()
        return False

    async def stalls(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()
        return False

    for respond in (silent, stalls):
        peer, url = await served(respond)
        pool = pools(url)
        started = time.monotonic()
        with pytest.raises(http1.TimedOut):
            await post(pool, timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1
        await asyncio.sleep(0.05)
        assert peer.ended, "the timed-out connection was closed"


async def test_an_informational_answer_is_skipped(served: Served, pools: Pools) -> None:
    async def early(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\nx-early: 1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(answer(b"final", "x-final: 1"))
        return True

    _, url = await served(early)
    pool = pools(url)
    async with await pool.request("POST", "/", {}, b"", timeout=5.0) as resp:
        assert (resp.status, await resp.read()) == (200, b"final")
        assert (b"x-final", b"1") in resp.headers
        assert (b"x-early", b"1") not in resp.headers
    assert await post(pool) == (200, b"final")


async def test_a_connection_reset_mid_answer_is_broken(served: Served, pools: Pools) -> None:
    async def cut(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        return False

    async def garbage(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    for respond in (cut, garbage):
        _, url = await served(respond)
        with pytest.raises(http1.ConnectionBroken):
            await post(pools(url))


async def test_error_statuses_come_back_with_their_bodies(served: Served, pools: Pools) -> None:
    async def refuse(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        status = "400 Bad Request" if seen.body == b"bad" else "503 Service Unavailable"
        writer.write(answer(b'{"error": "no"}', status=status))
        return True

    peer, url = await served(refuse)
    pool = pools(url)

    assert await post(pool, b"bad") == (400, b'{"error": "no"}')
    assert await post(pool, b"busy") == (503, b'{"error": "no"}')
    assert peer.connections == 1, "an error answer read to its end keeps the connection"


async def test_large_bodies_both_ways(served: Served, pools: Pools) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB

    async def echo(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(seen.body[::-1]))
        return True

    peer, url = await served(echo)
    pool = pools(url)

    assert await post(pool, big) == (200, big[::-1])
    assert (peer.connections, pool.idle_connections) == (1, 1)


async def test_a_lagging_reader_pauses_the_socket_and_still_gets_everything(served: Served, pools: Pools) -> None:
    big = b"x" * 8_000_000

    async def flood(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(big))
        return True

    _, url = await served(flood)
    pool = pools(url)
    got = bytearray()
    async with await pool.request("POST", "/", {}, b"", timeout=5.0) as resp:
        parts = aiter(resp.aiter_bytes())
        got += await anext(parts)
        await asyncio.sleep(0.2)
        assert resp._paused, "reading stopped while the consumer lagged"
        async for part in parts:
            got += part
    assert bytes(got) == big
    assert pool.idle_connections == 1


async def test_closing_the_pool_closes_every_connection(served: Served, pools: Pools) -> None:
    peer, url = await served(ok)
    pool = pools(url)
    await asyncio.gather(*(post(pool) for _ in range(3)))

    await pool.aclose()
    await asyncio.sleep(0.05)

    assert len(peer.ended) == peer.connections == 3
    with pytest.raises(http1.ConnectFailed, match="closed"):
        await post(pool)


async def test_a_header_with_a_line_break_is_refused(served: Served, pools: Pools) -> None:
    peer, url = await served(ok)
    with pytest.raises(ValueError, match="line break"):
        await pools(url).request("POST", "/", {"x-request-id": "a\r\nevil: 1"}, b"", timeout=1.0)
    assert peer.requests == []


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca = new_ca("engine test CA")
    key, cert = issue(ca_key, ca, "engine")
    write_identity(directory, "engine", key, cert)
    write_identity(directory, "ca", ca_key, ca)
    return directory


async def test_https_verifies_the_server_against_the_trusted_ca(pki: Path, pools: Pools) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki / "engine.crt", pki / "engine.key")
    peer = Peer(ok)
    url = await peer.start(tls)
    trusted = ssl.create_default_context(cafile=str(pki / "ca.crt"))

    pool = pools(url, ssl_context=trusted)
    assert await post(pool) == (200, b"ok:hi")
    assert await post(pool) == (200, b"ok:hi")
    assert peer.connections == 1

    with pytest.raises(http1.ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await post(pools(url))  # the system's CAs do not know the test CA
    await peer.close()


async def test_the_engine_client_maps_transport_failures(served: Served) -> None:
    async def cut(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        return False

    _, url = await served(cut)
    client = EngineClient(url, capacity=1, timeout=5.0)
    with pytest.raises(Unavailable, match="connection to the model server failed"):
        await client.chat({}, {})
    with pytest.raises(Unavailable, match="connection to the model server failed"):
        async for _ in client.stream_chat({}, {}):
            pass
    await client.aclose()
