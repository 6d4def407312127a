"""The embedded store's hot inserts on the MongoDB wire protocol itself: one OP_MSG `insert` per batch.

pymongo's asynchronous driver costs the queue about 0.25 ms of CPU per command (server selection, the
session pool, a timeout wrapper and two tasks for every reply it reads), about as much as the rest of a
Submit in the queue. The embedded FerretDB listens on a private Unix socket with no authentication, no
TLS and no topology to follow, so the inserts on the request path go out here: the documents encoded by
pymongo's own BSON codec, one command per batch on a connection of their own, the server's reply read by
a protocol callback. Everything else, and every MongoDB deployment, stays on pymongo.

This module speaks only the wire: it returns the server's reply document and raises `WireError` when
there is none; what a reply means for each document is decided by the store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Sequence
from typing import Any, cast

import bson

log = logging.getLogger(__name__)

Doc = dict[str, Any]

OP_MSG = 2013
HEADER = struct.Struct("<iiii")
"""messageLength, requestID, responseTo, opCode."""
FLAGS = struct.Struct("<I")
SECTION_SIZE = struct.Struct("<i")
CHECKSUM_PRESENT = 1
MORE_TO_COME = 2
KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME
BODY_SECTION = b"\x00"
SEQUENCE_SECTION = b"\x01"
DOCUMENTS = b"documents\x00"
"""The document sequence's identifier: the `insert` command's `documents` argument."""

DEFAULT_MAX_DOCUMENT = 16 * 1024 * 1024
DEFAULT_MAX_MESSAGE = 48_000_000
DEFAULT_MAX_BATCH = 100_000
COMMAND_ROOM = 16 * 1024
"""Room left in a message for the header and the command document besides the documents."""


class WireError(Exception):
    """No reply came; `sent` when the command may have reached the server (its effect is unknown)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _Replies(asyncio.Protocol):
    """Reads OP_MSG replies off the connection and hands each to the command waiting for it."""

    def __init__(self, max_reply: int) -> None:
        self.max_reply = max_reply
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[Doc]] = {}
        self.lost = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER.size:
            length, _, response_to, opcode = HEADER.unpack_from(buffer)
            if not HEADER.size + FLAGS.size < length <= self.max_reply or opcode != OP_MSG:
                self.fail(f"malformed reply from the store (length {length}, opcode {opcode})")
                return
            if len(buffer) < length:
                return
            message = bytes(buffer[HEADER.size : length])
            del buffer[:length]
            try:
                reply = _reply_document(message)
            except (ValueError, bson.errors.BSONError) as exc:
                self.fail(f"unreadable reply from the store: {exc}")
                return
            fut = self.waiting.pop(response_to, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_waiting("the store closed the connection")

    def fail(self, reason: str) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()
        self._fail_waiting(reason)

    def _fail_waiting(self, reason: str) -> None:
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(WireError(reason, sent=True))


def _reply_document(message: bytes) -> Doc:
    """The body section of an OP_MSG reply (after the header)."""
    (flags,) = FLAGS.unpack_from(message)
    if flags & ~KNOWN_FLAGS & 0xFFFF:
        raise ValueError(f"unknown required flag bits {flags:#x}")
    end = len(message) - (4 if flags & CHECKSUM_PRESENT else 0)
    if message[FLAGS.size : FLAGS.size + 1] != BODY_SECTION:
        raise ValueError("the reply does not start with a body section")
    start = FLAGS.size + 1
    (size,) = SECTION_SIZE.unpack_from(message, start)
    if start + size > end:
        raise ValueError("the reply's body runs past its message")
    document: Doc = bson.decode(message[start : start + size])
    return document


class WireConnection:
    """One connection to a MongoDB-wire server on a Unix socket, made on first use and again after a failure.

    Connecting waits up to `connect_timeout` for the server (a restarting store comes back within it),
    as pymongo's server selection does; a reply waits up to `reply_timeout`.
    """

    def __init__(self, path: str, *, connect_timeout: float, reply_timeout: float) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.max_document = DEFAULT_MAX_DOCUMENT
        self.max_message = DEFAULT_MAX_MESSAGE
        self.max_batch = DEFAULT_MAX_BATCH
        self._replies: _Replies | None = None
        self._ids = itertools.count(1)

    async def insert(self, db: str, collection: str, documents: Sequence[bytes], write_concern: Doc) -> Doc:
        """Sends one unordered `insert` of these encoded documents; returns the server's reply document."""
        command: Doc = {"insert": collection, "ordered": False, "writeConcern": write_concern, "$db": db}
        return await self._exchange(await self._connected(), command, documents)

    def close(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None and replies.transport is not None:
            replies.transport.close()

    async def _exchange(self, replies: _Replies, command: Doc, documents: Sequence[bytes]) -> Doc:
        request_id = next(self._ids) & 0x7FFFFFFF
        body = bson.encode(command)
        parts = [b"", FLAGS.pack(0), BODY_SECTION, body]
        if documents:
            sequence_size = SECTION_SIZE.size + len(DOCUMENTS) + sum(len(d) for d in documents)
            parts += [SEQUENCE_SECTION, SECTION_SIZE.pack(sequence_size), DOCUMENTS, *documents]
        length = sum(len(p) for p in parts) + HEADER.size
        parts[0] = HEADER.pack(length, request_id, 0, OP_MSG)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Doc] = loop.create_future()
        replies.waiting[request_id] = fut
        assert replies.transport is not None
        replies.transport.write(b"".join(parts))
        timer = loop.call_later(self.reply_timeout, self._timed_out, replies, request_id)
        try:
            return await fut
        finally:
            timer.cancel()

    def _timed_out(self, replies: _Replies, request_id: int) -> None:
        fut = replies.waiting.get(request_id)
        if fut is not None and not fut.done():
            log.warning("the store did not answer within %g s; reconnecting", self.reply_timeout)
            replies.fail(f"no reply from the store within {self.reply_timeout:g} s")  # the next command reconnects

    async def _connected(self) -> _Replies:
        if self._replies is not None and not self._replies.lost:
            return self._replies
        self._replies = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = 0.02
        while True:
            try:
                replies, hello = await asyncio.wait_for(self._open(), timeout=max(0.01, deadline - loop.time()))
                break
            except (OSError, TimeoutError, WireError) as exc:
                if loop.time() + delay >= deadline:
                    raise WireError(f"the store is unreachable: {type(exc).__name__}", sent=False) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
        self.max_document = int(hello.get("maxBsonObjectSize", DEFAULT_MAX_DOCUMENT))
        self.max_message = int(hello.get("maxMessageSizeBytes", DEFAULT_MAX_MESSAGE))
        self.max_batch = int(hello.get("maxWriteBatchSize", DEFAULT_MAX_BATCH))
        replies.max_reply = self.max_message
        self._replies = replies
        return replies

    async def _open(self) -> tuple[_Replies, Doc]:
        """A new connection and the server's `hello` on it (the limits it takes)."""
        loop = asyncio.get_running_loop()
        _, replies = await loop.create_unix_connection(lambda: _Replies(self.max_message), self.path)
        try:
            return replies, await self._exchange(replies, {"hello": 1, "$db": "admin"}, ())
        except BaseException:
            replies.fail("the connection was given up")
            raise

    def chunks(self, documents: Sequence[bytes]) -> list[tuple[int, int]]:
        """The [start, end) ranges of `documents` that fit one message each (each document fitting on its own)."""
        ranges: list[tuple[int, int]] = []
        start, size = 0, 0
        room = self.max_message - COMMAND_ROOM
        for i, doc in enumerate(documents):
            if i > start and (size + len(doc) > room or i - start >= self.max_batch):
                ranges.append((start, i))
                start, size = i, 0
            size += len(doc)
        if start < len(documents):
            ranges.append((start, len(documents)))
        return ranges
