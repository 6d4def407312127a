"""The crash log: abnormal events (lease loss, retries, recoveries, deadlines, backend crashes), newest first."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from aigw_server.queue.store import CLOSE_WAIT_SECONDS, CRASHES, Duplicate, QueueStore, StoreUnavailable, stop_if_cancelled
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.errors import InvalidArgument

log = logging.getLogger(__name__)

Doc = dict[str, Any]
MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_PENDING = 10_000
RETRY_SECONDS = 1.0


class CrashKind(IntEnum):
    """Kinds of abnormal event (values as in aigw.queue.v1.CrashKind)."""

    LEASE_LOST = 1
    BACKEND_CRASH = 2
    ENGINE_RESTART = 3
    RETRY = 4
    RECOVERY = 5
    DEADLINE = 6
    PROCESS_RESTART = 7


@dataclass(frozen=True)
class CrashEvent:
    """One abnormal event."""

    kind: CrashKind
    message: str
    service: str = "queue"
    model: str = ""
    backend: str = ""
    request_id: str = ""
    details: dict[str, str] = field(default_factory=dict)
    log_tail: tuple[str, ...] = ()
    id: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class CrashFilter:
    """What ListCrashes selects."""

    service: str = ""
    model: str = ""
    kind: int = 0
    request_id: str = ""
    since: float = 0.0
    until: float = 0.0


def event_document(e: CrashEvent) -> Doc:
    return {
        "_id": e.id,
        "at": to_datetime(e.at),
        "kind": int(e.kind),
        "service": e.service,
        "model": e.model,
        "backend": e.backend,
        "request_id": e.request_id,
        "message": e.message,
        "details": [{"key": k, "value": v} for k, v in e.details.items()],
        "log_tail": list(e.log_tail),
    }


def event_from_document(doc: Doc) -> CrashEvent:
    return CrashEvent(
        kind=CrashKind(doc["kind"]),
        message=doc.get("message", ""),
        service=doc.get("service", ""),
        model=doc.get("model", ""),
        backend=doc.get("backend", ""),
        request_id=doc.get("request_id", ""),
        details={str(d["key"]): str(d["value"]) for d in doc.get("details") or []},
        log_tail=tuple(doc.get("log_tail") or ()),
        id=doc["_id"],
        at=from_datetime(doc["at"]),
    )


def encode_cursor(at_ms: int, key: str) -> str:
    """An opaque page token: the sort key of the last item returned."""
    return base64.urlsafe_b64encode(f"{at_ms}|{key}".encode()).decode()


MAX_CURSOR_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z, the last instant a datetime holds
_CURSOR_KEY = re.compile(r"[\x21-\x7e]{1,256}")


def decode_cursor(token: str) -> tuple[int, str]:
    """The sort key a page token holds, or InvalidArgument: a tampered token never reaches the store."""
    try:
        at, key = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii").split("|", 1)
        at_ms = int(at)
    except (ValueError, UnicodeError):
        at_ms, key = -1, ""
    if not (0 <= at_ms <= MAX_CURSOR_MS and _CURSOR_KEY.fullmatch(key)):
        raise InvalidArgument("page_token: not a token this service returned", field="page_token")
    return at_ms, key


def before_cursor(field_name: str, token: str) -> Doc:
    """The query part selecting items after the token's item in (field desc, _id desc) order."""
    at_ms, key = decode_cursor(token)
    at = to_datetime(at_ms / 1000.0)
    return {"$or": [{field_name: {"$lt": at}}, {field_name: at, "_id": {"$lt": key}}]}


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size: must be >= 0", field="page_size")
    return min(MAX_PAGE, requested or DEFAULT_PAGE)


class CrashLog:
    """Writes and lists crash events; the queue's own events are written in the background and retried."""

    def __init__(self, store: QueueStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._pending: list[CrashEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def complete(self, event: CrashEvent) -> CrashEvent:
        """The event with its id and time filled in."""
        if not event.kind:
            raise InvalidArgument("event.kind: required", field="event.kind")
        if not event.message:
            raise InvalidArgument("event.message: required", field="event.message")
        return CrashEvent(
            event.kind,
            event.message[:4000],
            event.service or "unknown",
            event.model,
            event.backend,
            event.request_id,
            event.details,
            event.log_tail[-200:],
            event.id or uuid.uuid4().hex,
            event.at or self.clock(),
        )

    async def record(self, event: CrashEvent) -> CrashEvent:
        """Stores an event reported by a service (acknowledged write)."""
        stored = self.complete(event)
        await self.store.insert(CRASHES, event_document(stored))
        return stored

    def note(self, event: CrashEvent) -> None:
        """Queues one of the queue's own events for writing; it is retried until the database takes it."""
        stored = self.complete(event)
        log.info("crash event", extra={"kind": stored.kind.name, "request_id": stored.request_id, "detail": stored.message})
        if len(self._pending) < MAX_PENDING:
            self._pending.append(stored)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def flush(self) -> None:
        """Waits until every noted event is stored (tests and shutdown)."""
        while self._pending:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=CLOSE_WAIT_SECONDS)
            self._task = None

    async def _run(self) -> None:
        while True:
            stop_if_cancelled()
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                stop_if_cancelled()
                event = self._pending[0]
                try:
                    await self.store.insert(CRASHES, event_document(event))
                except StoreUnavailable:
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                except Duplicate:
                    log.debug("crash event already stored", extra={"id": event.id})
                self._pending.pop(0)

    async def list(self, filt: CrashFilter, size: int, token: str) -> tuple[list[CrashEvent], str]:
        """Events newest first, one page, and the next page's token."""
        query: Doc = {}
        for name in ("service", "model", "request_id"):
            if getattr(filt, name):
                query[name] = getattr(filt, name)
        if filt.kind:
            query["kind"] = filt.kind
        bounds: Doc = {}
        if filt.since:
            bounds["$gte"] = to_datetime(filt.since)
        if filt.until:
            bounds["$lt"] = to_datetime(filt.until)
        if bounds:
            query["at"] = bounds
        if token:
            query = {"$and": [query, before_cursor("at", token)]}
        limit = page_size(size)
        docs = await self.store.find(CRASHES, query, sort=[("at", -1), ("_id", -1)], limit=limit + 1)
        events = [event_from_document(d) for d in docs[:limit]]
        next_token = ""
        if len(docs) > limit:
            last = docs[limit - 1]
            next_token = encode_cursor(round(from_datetime(last["at"]) * 1000), last["_id"])
        return events, next_token
