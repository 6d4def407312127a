"""The store's wire connection against scripted peers on a real Unix socket: the replies a real store rarely
gives (none, garbage, a checksum, a closed connection) and how batches are cut to the server's limits."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import bson
import pytest
import uvloop

from aigw_server.queue.store_wire import HEADER, OP_MSG, WireConnection, WireError

Doc = dict[str, object]
# Answers one command (its request id and body); returns the bytes to send back (b"": none).
Script = Callable[[int, Doc], Awaitable[bytes]]
HELLO: Doc = {"ok": 1.0, "maxBsonObjectSize": 1000, "maxMessageSizeBytes": 40_000, "maxWriteBatchSize": 3}


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on asyncio's own loop and on uvloop's (what the services run on)."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


def reply(request_id: int, doc: Doc, *, flags: int = 0, trailer: bytes = b"") -> bytes:
    body = struct.pack("<I", flags) + b"\x00" + bson.encode(doc) + trailer
    return HEADER.pack(HEADER.size + len(body), 7, request_id, OP_MSG) + body


async def read_command(reader: asyncio.StreamReader) -> tuple[int, Doc, int]:
    """A command's request id, body and number of sequence documents."""
    header = await reader.readexactly(HEADER.size)
    length, request_id, _, opcode = HEADER.unpack(header)
    assert opcode == OP_MSG
    message = await reader.readexactly(length - HEADER.size)
    assert message[4:5] == b"\x00"
    (size,) = struct.unpack_from("<i", message, 5)
    body: Doc = bson.decode(message[5 : 5 + size])
    rest = message[5 + size :]
    documents = 0
    if rest:
        assert rest[:1] == b"\x01"
        docs = rest[5 + len(b"documents\x00") :]
        while docs:
            (n,) = struct.unpack_from("<i", docs)
            docs = docs[n:]
            documents += 1
    return request_id, body, documents


@contextlib.asynccontextmanager
async def peer(tmp_path: Path, script: Script, seen: list[tuple[Doc, int]] | None = None) -> AsyncIterator[str]:
    """A server on a Unix socket that answers `hello` and hands every other command to `script`."""

    handlers: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request_id, body, documents = await read_command(reader)
            if "hello" in body:
                writer.write(reply(request_id, HELLO))
                continue
            if seen is not None:
                seen.append((body, documents))
            answer = await script(request_id, body)
            if not answer:
                return
            writer.write(answer)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    path = str(tmp_path / "store.sock")
    server = await asyncio.start_unix_server(serve, path)
    try:
        yield path
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def connection(path: str, reply_timeout: float = 5.0) -> WireConnection:
    return WireConnection(path, connect_timeout=0.5, reply_timeout=reply_timeout)


async def test_a_reply_is_read_with_the_limits_the_server_gave(tmp_path: Path) -> None:
    async def ok(request_id: int, body: Doc) -> bytes:
        return reply(request_id, {"ok": 1.0, "n": 2})

    seen: list[tuple[Doc, int]] = []
    async with peer(tmp_path, ok, seen) as path:
        wire = connection(path)
        try:
            answer = await wire.insert("db", "jobs", [bson.encode({"_id": 1}), bson.encode({"_id": 2})], {"w": 1, "j": True})
        finally:
            wire.close()
    assert answer == {"ok": 1.0, "n": 2}
    assert seen == [({"insert": "jobs", "ordered": False, "writeConcern": {"w": 1, "j": True}, "$db": "db"}, 2)]
    assert (wire.max_document, wire.max_message, wire.max_batch) == (1000, 40_000, 3)


async def test_a_reply_with_a_checksum_is_read(tmp_path: Path) -> None:
    async def with_checksum(request_id: int, body: Doc) -> bytes:
        return reply(request_id, {"ok": 1.0, "n": 1}, flags=1, trailer=b"\x01\x02\x03\x04")

    async with peer(tmp_path, with_checksum) as path:
        wire = connection(path)
        try:
            assert await wire.insert("db", "c", [bson.encode({"_id": 1})], {"w": 1}) == {"ok": 1.0, "n": 1}
        finally:
            wire.close()


async def test_no_reply_in_time_is_an_error_that_may_have_written(tmp_path: Path) -> None:
    calls = 0

    async def slow_once(request_id: int, body: Doc) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.0)
        return reply(request_id, {"ok": 1.0, "n": 1})

    async with peer(tmp_path, slow_once) as path:
        wire = connection(path, reply_timeout=0.2)
        try:
            with pytest.raises(WireError) as late:
                await wire.insert("db", "c", [bson.encode({"_id": 1})], {"w": 1})
            assert late.value.sent
            # The next command goes on a new connection; the late reply of the first never answers it.
            assert await wire.insert("db", "c", [bson.encode({"_id": 2})], {"w": 1}) == {"ok": 1.0, "n": 1}
        finally:
            wire.close()


@pytest.mark.parametrize(
    "answer",
    [
        lambda rid: b"",  # the server closes the connection
        lambda rid: HEADER.pack(16, 1, rid, 1) + b"",  # not an OP_MSG
        lambda rid: HEADER.pack(60, 1, rid, OP_MSG) + b"\x00\x00\x00\x00\x00" + b"\x37\x00\x00\x00" + b"\x00" * 47,
    ],
    ids=["closed", "wrong opcode", "unreadable body"],
)
async def test_a_broken_reply_is_an_error_that_may_have_written(tmp_path: Path, answer: Callable[[int], bytes]) -> None:
    async def broken(request_id: int, body: Doc) -> bytes:
        return answer(request_id)

    async with peer(tmp_path, broken) as path:
        wire = connection(path)
        try:
            with pytest.raises(WireError) as failed:
                await wire.insert("db", "c", [bson.encode({"_id": 1})], {"w": 1})
        finally:
            wire.close()
    assert failed.value.sent


async def test_an_unreachable_store_is_an_error_that_wrote_nothing(tmp_path: Path) -> None:
    wire = connection(str(tmp_path / "nobody.sock"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WireError) as failed:
        await wire.insert("db", "c", [bson.encode({"_id": 1})], {"w": 1})
    assert not failed.value.sent
    assert 0.3 < loop.time() - started < 2.0  # it waited for the store about as long as it was told


def test_batches_are_cut_to_the_server_s_message_and_count_limits() -> None:
    wire = WireConnection("/unused", connect_timeout=1.0, reply_timeout=1.0)
    wire.max_batch = 3
    wire.max_message = 16 * 1024 + 1000
    docs = [b"x" * 400] * 7
    assert wire.chunks(docs) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # 1,000 bytes of room: two documents each
    wire.max_message = 10_000_000
    assert wire.chunks(docs) == [(0, 3), (3, 6), (6, 7)]
    assert wire.chunks([b"y" * 5000]) == [(0, 1)]  # one document always goes (its own size is checked by the store)
    assert wire.chunks([]) == []
