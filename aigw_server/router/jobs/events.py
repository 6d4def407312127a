"""What a running job tells the client waiting for it: the backend, deltas, pages, retries and the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aigw.common.v1 import common_pb2


@dataclass(frozen=True)
class Started:
    """An attempt started on a backend."""

    backend: str


@dataclass(frozen=True)
class Delta:
    """Text the backend produced."""

    text: str


@dataclass(frozen=True)
class Page:
    """A finished OCR page."""

    page: common_pb2.OcrPage
    page_count: int


@dataclass(frozen=True)
class Retrying:
    """The attempt failed and the job went back to the queue for another one."""

    reason: str


@dataclass(frozen=True)
class Finished:
    """The job ended (or its runner failed): the last event."""

    job: common_pb2.Job | None
    error: BaseException | None = None


Event = Started | Delta | Page | Retrying | Finished


class Listener:
    """Collects a job's events for the RPC that waits on it; nobody has to read them (the client may be gone)."""

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def started(self, backend: str) -> None:
        self.queue.put_nowait(Started(backend))

    def delta(self, text: str) -> None:
        self.queue.put_nowait(Delta(text))

    def page(self, page: common_pb2.OcrPage, page_count: int) -> None:
        self.queue.put_nowait(Page(page, page_count))

    def retrying(self, reason: str) -> None:
        self.queue.put_nowait(Retrying(reason))

    def finished(self, job: common_pb2.Job | None, error: BaseException | None = None) -> None:
        self.queue.put_nowait(Finished(job, error))

    async def events(self) -> AsyncIterator[Event]:
        """The events in order, ending with Finished."""
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, Finished):
                return
