"""Subscriptions to job changes (WatchJob): each watcher's event queue, and the places last told to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from enum import IntEnum

from aigw_server.queue.active_jobs import ActiveJobs
from aigw_server.queue.jobs import JobRecord, State


class WatchEvent(IntEnum):
    """What a WatchJob event reports (values as in aigw.queue.v1.WatchEvent)."""

    POSITION = 1
    GRANTED = 2
    PROGRESS = 3
    REQUEUED = 4
    FINISHED = 5


class JobWatchers:
    """Who watches which unfinished job; tells them of its changes and of moves of its place in the queue."""

    def __init__(self, jobs: ActiveJobs, clock: Callable[[], float]) -> None:
        self.jobs = jobs
        self.clock = clock
        self._watchers: dict[str, list[asyncio.Queue[WatchEvent]]] = {}
        self._positions: dict[str, int] = {}

    async def follow(self, rec: JobRecord) -> AsyncIterator[tuple[WatchEvent, JobRecord]]:
        """An unfinished job's events until it ends: its state first (POSITION or GRANTED), then every change."""
        request_id = rec.request_id
        events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.setdefault(request_id, []).append(events)
        try:
            first = WatchEvent.POSITION if rec.state == State.QUEUED else WatchEvent.GRANTED
            self._positions[request_id] = self.jobs.position(rec, self.clock())
            yield first, rec
            while True:
                event = await events.get()
                yield event, rec
                if event == WatchEvent.FINISHED:
                    return
        finally:
            queues = self._watchers.get(request_id, [])
            if events in queues:
                queues.remove(events)
            if not queues:
                self._watchers.pop(request_id, None)
                self._positions.pop(request_id, None)

    def notify(self, rec: JobRecord, event: WatchEvent) -> None:
        for events in self._watchers.get(rec.request_id, ()):
            events.put_nowait(event)

    def positions_moved(self, model: str) -> None:
        """Sends POSITION to watchers of the model's queued jobs whose place changed."""
        if not self._watchers:
            return
        watched = [rec for rid in self._watchers if (rec := self.jobs.get(rid)) is not None and rec.model == model]
        if not watched:
            return
        positions = self.jobs.positions(model, self.clock())
        for rec in watched:
            place = positions.get(rec.request_id, 0)
            if place != self._positions.get(rec.request_id):
                self._positions[rec.request_id] = place
                if place:
                    self.notify(rec, WatchEvent.POSITION)
