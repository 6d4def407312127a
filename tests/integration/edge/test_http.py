"""The edge's HTTP/1.1 handling on raw sockets: pipelining, size limits, 100-continue, slow clients, connection limits."""

from __future__ import annotations

import asyncio
import time

import orjson

from aigw_server.edge.protocol import Limits
from tests.integration.edge.conftest import Running, StartEdge

GET = b"GET /v1/messages/%s HTTP/1.1\r\nhost: edge\r\n\r\n"


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends `data` and reads until the edge closes the connection (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a content-length body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(GET % b"first" + GET % b"second" + GET % b"third")
    ids = [orjson.loads((await read_response(reader))[2])["message_id"] for _ in range(3)]
    writer.close()
    assert ids == ["first", "second", "third"]


async def test_a_pipelined_request_waits_for_a_slow_one_without_timing_out(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(header_timeout=0.2, body_idle_timeout=0.2, body_timeout=0.2))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    slow = b'{"count": 3, "interval_seconds": 0.3}'
    writer.write(b"POST /v1/count HTTP/1.1\r\nhost: edge\r\ncontent-length: %d\r\n\r\n%s" % (len(slow), slow) + GET % b"second")
    received = b""
    while b'"message_id":"second"' not in received:
        received += await asyncio.wait_for(reader.read(65536), 3)
    writer.close()
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.index(b'data: {"index":3}') < received.index(b'"message_id":"second"')


async def test_http10_gets_an_answer_and_the_connection_closes(running: Running) -> None:
    raw = await exchange(running.port, b"GET /v1/messages/old HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"message_id":"old"' in raw


async def test_declared_oversize_body_is_413_before_it_is_sent(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(max_body_bytes=1000))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"POST /v1/uploads/big HTTP/1.1\r\nhost: edge\r\ncontent-type: image/png\r\ncontent-length: 50000000\r\n\r\n")
    status, headers, body = await asyncio.wait_for(read_response(reader), 2)
    writer.close()
    assert (status, headers["connection"]) == (413, "close")
    assert orjson.loads(body)["message"] == "the request body is over the limit of 1,000 bytes"


async def test_chunked_body_over_the_limit_is_413(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(max_body_bytes=1000))
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    request = b"POST /v1/uploads/big HTTP/1.1\r\nhost: edge\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
    raw = await exchange(running.port, request)
    assert raw.startswith(b"HTTP/1.1 413 ")


async def test_default_limit_takes_14_mib_and_refuses_one_byte_more(running: Running) -> None:
    limit = 14 * 1024 * 1024  # a 10 MiB document as base64 in JSON, with room for the other fields
    ok = await running.client.post("/v1/uploads/scan.pdf", content=b"%" * limit, headers={"content-type": "application/pdf"})
    assert ok.json()["size"] == str(limit)
    too_big = await running.client.post("/v1/uploads/scan.pdf", content=b"%" * (limit + 1))
    assert too_big.status_code == 413


async def test_expect_100_continue_is_honoured(running: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"POST /v1/raw:echo HTTP/1.1\r\nhost: edge\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, b"OK")


async def test_slow_headers_get_408_and_do_not_hold_up_others(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(header_timeout=0.5))
    slow = asyncio.create_task(exchange(running.port, b"GET /v1/messages/1 HTTP/1.1\r\nhost: edge\r\nx-slow: "))
    await asyncio.sleep(0.1)
    fast = await running.client.get("/v1/messages/2")
    start = time.monotonic()
    raw = await slow
    assert fast.status_code == 200
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start < 1.5


async def test_a_stalled_body_gets_408(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(body_idle_timeout=0.3))
    raw = await exchange(running.port, b'POST /v1/count HTTP/1.1\r\nhost: edge\r\ncontent-length: 20\r\n\r\n{"cou')
    assert raw.startswith(b"HTTP/1.1 408 ")


async def test_a_trickled_body_gets_408_at_the_total_body_timeout(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(body_idle_timeout=0.3, body_timeout=0.8))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"POST /v1/count HTTP/1.1\r\nhost: edge\r\ncontent-length: 100\r\n\r\n")
    start = time.monotonic()

    async def trickle() -> None:
        for _ in range(100):
            writer.write(b" ")
            await asyncio.sleep(0.1)

    trickling = asyncio.create_task(trickle())
    status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)
    elapsed = time.monotonic() - start
    assert status_line.startswith(b"HTTP/1.1 408 ")
    assert 0.7 < elapsed < 2.5
    # A client that got its answer stops sending. The edge has meanwhile dropped what still arrived (so the
    # client read the answer, not a reset) and closes once its linger time is over. A byte that reached the
    # edge after that close would make the kernel answer with a reset, hence the stop before reading on.
    trickling.cancel()
    rest = await asyncio.wait_for(reader.read(-1), 4)
    assert b"arrived too slowly" in rest
    writer.close()


async def test_idle_keep_alive_connections_are_closed(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(keepalive_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(GET % b"1")
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(-1), 2) == b""
    writer.close()


async def test_oversize_headers_get_431(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(max_header_bytes=2048))
    raw = await exchange(running.port, b"GET /v1/messages/1 HTTP/1.1\r\nx-big: " + b"a" * 4096 + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 431 ")


async def test_malformed_requests_get_400(running: Running) -> None:
    raw = await exchange(running.port, b"GET /v1/messages/1 HTTP/1.1\r\nbad header line\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


async def test_connections_beyond_the_limit_get_503(start_edge: StartEdge) -> None:
    running = await start_edge(Limits(max_connections=1))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(GET % b"1")
    await read_response(reader)
    raw = await exchange(running.port, GET % b"2")
    writer.close()
    assert raw.startswith(b"HTTP/1.1 503 ")
