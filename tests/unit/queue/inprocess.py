"""The queue's servicers in process, without sockets or a database: an in-memory store, a stand-in for
`grpc.aio.ServicerContext`, and each RPC run through the service's real interceptor chain (error mapping,
request id) as the gRPC server would run it.

grpc_testing drives synchronous servicers only; every queue servicer is a grpc.aio one, hence this.
"""

from __future__ import annotations

import copy
import operator
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from aigw_server.queue.store import Doc, Duplicate, Features, QueueStore
from aigw_server.runtime.interceptors import ServerInterceptor

UNIQUE = {"jobs": ("idem",)}
"""Unique fields besides _id, as the real store's indexes make them."""


def _matches(doc: Doc, query: Mapping[str, Any]) -> bool:
    for name, want in query.items():
        if name == "$and":
            if not all(_matches(doc, q) for q in want):
                return False
        elif name == "$or":
            if not any(_matches(doc, q) for q in want):
                return False
        elif isinstance(want, dict) and any(k.startswith("$") for k in want):
            if not _compare(doc.get(name), want):
                return False
        elif doc.get(name) != want:
            return False
    return True


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$in": lambda value, arg: value in arg,
    "$lt": lambda value, arg: value is not None and value < arg,
    "$lte": lambda value, arg: value is not None and value <= arg,
    "$gt": lambda value, arg: value is not None and value > arg,
    "$gte": lambda value, arg: value is not None and value >= arg,
    "$ne": operator.ne,
}


def _compare(value: Any, ops: Mapping[str, Any]) -> bool:
    return all(_OPERATORS[op](value, arg) for op, arg in ops.items())


def _field(key: str) -> Callable[[Doc], Any]:
    def value(doc: Doc) -> Any:
        return doc.get(key)

    return value


class MemoryStore(QueueStore):
    """QueueStore's operations over dicts: inserts refuse a taken _id (or unique key) as the database does."""

    def __init__(self) -> None:  # no client, no connection: nothing of the parent's state is used
        self.collections: dict[str, dict[str, Doc]] = {}

    def _coll(self, name: str) -> dict[str, Doc]:
        return self.collections.setdefault(name, {})

    async def connect(self) -> Features:
        return Features(replica_set=False, ttl_indexes=False)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    async def insert(self, name: str, doc: Doc) -> None:
        coll = self._coll(name)
        if doc["_id"] in coll:
            raise Duplicate()
        for key in UNIQUE.get(name, ()):
            if doc.get(key) is not None and any(d.get(key) == doc[key] for d in coll.values()):
                raise Duplicate()
        coll[doc["_id"]] = copy.deepcopy(doc)

    async def find_one(self, name: str, query: Doc, projection: Mapping[str, Any] | None = None) -> Doc | None:
        found = await self.find(name, query, limit=1)
        return found[0] if found else None

    async def find(
        self,
        name: str,
        query: Doc,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[Doc]:
        found = [copy.deepcopy(d) for d in self._coll(name).values() if _matches(d, query)]
        for key, direction in reversed(sort or ()):
            found.sort(key=_field(key), reverse=direction < 0)
        return found[:limit] if limit else found

    async def replace(self, name: str, doc: Doc, *, upsert: bool = False) -> bool:
        coll = self._coll(name)
        if doc["_id"] not in coll and not upsert:
            return False
        coll[doc["_id"]] = copy.deepcopy(doc)
        return True

    async def update_one(self, name: str, query: Doc, update: Doc) -> int:
        return await self._update(name, query, update, 1)

    async def update_many(self, name: str, query: Doc, update: Doc) -> int:
        return await self._update(name, query, update, 0)

    async def _update(self, name: str, query: Doc, update: Doc, limit: int) -> int:
        changed = 0
        for doc in self._coll(name).values():
            if _matches(doc, query) and (not limit or changed < limit):
                doc.update(copy.deepcopy(update["$set"]))
                changed += 1
        return changed

    async def delete_many(self, name: str, query: Doc) -> int:
        coll = self._coll(name)
        gone = [k for k, d in coll.items() if _matches(d, query)]
        for key in gone:
            del coll[key]
        return len(gone)

    async def delete_ids(self, name: str, ids: Sequence[str]) -> int:
        return await self.delete_many(name, {"_id": {"$in": list(ids)}})


class Aborted(Exception):
    """Raised by FakeContext.abort, as grpc.aio raises AbortError."""


class SentStatus(NamedTuple):
    """The status a call ended with, as the server sent it."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


@dataclass
class FakeContext:
    """What the queue's servicers and interceptors use of grpc.aio.ServicerContext, recording the status."""

    metadata: Sequence[tuple[str, str]] = ()
    status: SentStatus | None = None
    _code: grpc.StatusCode | None = None
    _details: str = ""
    trailing: tuple[tuple[str, str | bytes], ...] = field(default_factory=tuple)

    def invocation_metadata(self) -> Sequence[tuple[str, str]]:
        return self.metadata

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def details(self) -> str:
        return self._details

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        self.trailing = tuple(metadata)

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return "in-process"

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        self.status = SentStatus(code, details, tuple(trailing_metadata))
        self._code = code
        self._details = details
        raise grpc.aio.AbortError()


class _Details(NamedTuple):
    method: str
    invocation_metadata: Sequence[tuple[str, str]]


class _HandlerTable:
    """Stands in for a grpc.aio.Server when a generated add_*_to_server registers a servicer."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    @property
    def server(self) -> grpc.aio.Server:
        """This table where generated code takes a server (it calls only the two methods below)."""
        return cast(grpc.aio.Server, self)

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        return None

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


@dataclass
class Failure:
    """An RPC that ended with an error status: its code, message and google.rpc.Status details."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status


class Rpcs:
    """Calls the servicers registered on it through the queue's interceptor chain, in process."""

    def __init__(self) -> None:
        self.table = _HandlerTable()
        self.interceptor = ServerInterceptor("queue")

    async def _handler(self, method: str, metadata: Sequence[tuple[str, str]]) -> Any:
        async def continuation(details: Any) -> Any:
            return self.table.handlers.get(details.method)

        return await self.interceptor.intercept_service(continuation, _Details(method, metadata))  # type: ignore[arg-type]

    async def unary(self, method: str, request: Message, metadata: Sequence[tuple[str, str]] = ()) -> Any:
        """The reply, or the Failure it ended with."""
        handler = await self._handler(method, metadata)
        context = FakeContext(metadata)
        try:
            return await handler.unary_unary(request, context)
        except grpc.aio.AbortError:
            return _failure(context)

    async def stream(self, method: str, request: Message, limit: int = 0) -> tuple[list[Any], Failure | None]:
        """A server stream's replies (the first `limit` when set), and the Failure it ended with, if any."""
        handler = await self._handler(method, ())
        context = FakeContext()
        replies: list[Any] = []
        stream = handler.unary_stream(request, context)
        try:
            async for reply in stream:
                replies.append(reply)
                if limit and len(replies) >= limit:
                    break
        except grpc.aio.AbortError:
            return replies, _failure(context)
        finally:
            await stream.aclose()
        return replies, None

    async def bidi(self, method: str, requests: Sequence[Message]) -> list[Any]:
        """A bidirectional stream's replies to `requests` (the caller half-closes after the last one)."""
        handler = await self._handler(method, ())

        async def send() -> AsyncIterator[Message]:
            for request in requests:
                yield request

        return [reply async for reply in handler.stream_stream(send(), FakeContext())]


def _failure(context: FakeContext) -> Failure:
    assert context.status is not None
    details = dict(context.status.trailing_metadata)
    status = status_pb2.Status.FromString(details["grpc-status-details-bin"])
    return Failure(context.status.code, context.status.details, status)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now
