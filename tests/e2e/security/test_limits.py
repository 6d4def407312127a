"""Size and time limits at the edge: oversized bodies and headers, uploads over the OCR limit, slow (slowloris) clients."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import httpx

from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import (
    INVALID_ARGUMENT,
    RawResponse,
    assert_status_json,
    parse_response,
    raw_request,
    refusal,
    rpc_count,
)

OCR_LIMIT = 10 * 1024 * 1024
HEADER_TIMEOUT = 10.0
SLOW_CLIENTS = 40


def edge_address(secure: SecureMesh) -> tuple[str, int]:
    parts = urlsplit(secure.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def router_calls(secure: SecureMesh, method: str) -> float:
    return rpc_count(secure.mesh.cfg.services.router.metrics_port, "router", method)


def assert_too_large(reply: RawResponse, limit: int) -> None:
    assert reply.status_code == 413, reply
    status = assert_status_json(413, reply.content)
    assert status["code"] == INVALID_ARGUMENT
    assert f"{limit:,}" in status["message"]


def send_until_answered(secure: SecureMesh, head: bytes, chunks: int, chunk: bytes) -> RawResponse:
    """Sends a head and then body pieces until the server answers or closes; returns what it answered."""
    with socket.create_connection(edge_address(secure), timeout=30) as sock:
        sock.sendall(head)
        try:
            for _ in range(chunks):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
    return parse_response(received)


def test_a_body_over_the_edge_limit_is_refused_with_413_before_any_service(secure: SecureMesh) -> None:
    limit = secure.mesh.cfg.server.max_body_bytes
    token = secure.token()
    before = router_calls(secure, "Ocr"), router_calls(secure, "Chat")
    declared = (
        f"POST /api/ocr HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\ncontent-type: image/png\r\n"
        f"content-length: {limit + 1}\r\n\r\n"
    ).encode()
    assert_too_large(send_until_answered(secure, declared, 1, b"\0" * 65536), limit)
    chunked = (
        f"POST /api/chat HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    ).encode()
    piece = 1024 * 1024
    body_chunk = f"{piece:x}\r\n".encode() + b" " * piece + b"\r\n"
    assert_too_large(send_until_answered(secure, chunked, limit // piece + 2, body_chunk), limit)
    assert (router_calls(secure, "Ocr"), router_calls(secure, "Chat")) == before
    with secure.client() as client:
        small = client.post("/api/ocr", content=b"\0" * 1024, headers={**secure.bearer(token), "content-type": "image/png"})
    assert small.status_code == 400
    assert router_calls(secure, "Ocr") == before[0] + 1, "the router's call counter does not show calls"


def test_an_upload_over_the_ocr_limit_but_under_the_edge_limit_gets_413(secure: SecureMesh) -> None:
    size = OCR_LIMIT + 512 * 1024
    assert size < secure.mesh.cfg.server.max_body_bytes
    upload = b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)
    with secure.client() as client:
        reply = client.post("/api/ocr", content=upload, headers={**secure.bearer(secure.token()), "content-type": "image/png"})
    status = refusal(reply, 413, INVALID_ARGUMENT, f"{OCR_LIMIT:,}")
    assert f"{size:,}" in status["message"]


def test_headers_over_the_limit_are_refused_with_431(secure: SecureMesh) -> None:
    filler = "".join(f"x-filler-{i}: {'f' * 1000}\r\n" for i in range(70))
    reply = raw_request(secure.url, f"GET /health HTTP/1.1\r\nhost: edge\r\n{filler}\r\n".encode())
    assert reply.status_code == 431
    assert assert_status_json(431, reply.content)["code"] == INVALID_ARGUMENT


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float) -> tuple[float, bytes]:
    """Sends a request head one byte at a time, never finishing it; returns when the server closed and what it said."""
    writer.write(b"POST /api/chat HTTP/1.1\r\nhost: edge\r\n")
    await writer.drain()
    started = time.monotonic()
    answer = b""
    while time.monotonic() < deadline:
        try:
            writer.write(b"x")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), timeout=0.5)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not data:
            break
        answer += data
    writer.close()
    return time.monotonic() - started, answer


async def health_latencies(url: str, until: asyncio.Future[list[tuple[float, bytes]]]) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while not until.done():
            started = time.monotonic()
            reply = await client.get("/health")
            assert reply.status_code == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.5)
    return latencies


async def test_slow_clients_neither_block_the_edge_nor_keep_their_connections(secure: SecureMesh) -> None:
    host, port = edge_address(secure)
    deadline = time.monotonic() + HEADER_TIMEOUT + 10
    silent = [await asyncio.open_connection(host, port) for _ in range(SLOW_CLIENTS)]
    slow = [await asyncio.open_connection(host, port) for _ in range(SLOW_CLIENTS)]
    trickling = asyncio.gather(*(trickle(r, w, deadline) for r, w in slow))
    latencies = await health_latencies(secure.url, trickling)
    closed = await trickling
    for _, writer in silent:
        writer.close()
    assert len(latencies) >= 10
    assert max(latencies) < 3.0, latencies
    for seconds, answer in closed:
        assert seconds < HEADER_TIMEOUT + 5, closed
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert_status_json(408, parse_response(answer).content)
