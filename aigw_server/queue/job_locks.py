"""One writer per job: a job's transitions run one at a time, and a job set free is offered for grants again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aigw_server.queue.jobs import JobRecord


class JobLocks:
    """Per-job locks (the record's `busy` flag and the callers waiting for it)."""

    def __init__(self, on_release: Callable[[str], None]) -> None:
        self._on_release = on_release
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def acquire(self, rec: JobRecord) -> None:
        """Waits until the job is free, then holds it."""
        while rec.busy:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(rec.request_id, []).append(fut)
            await fut
        rec.busy = True

    @staticmethod
    def hold(rec: JobRecord) -> None:
        """Holds a job known to be free (a new admission, or a job reserved for its taker)."""
        rec.busy = True

    def release(self, rec: JobRecord) -> None:
        """Frees the job, wakes whoever waits for it, and lets its model grant again (`on_release`)."""
        rec.busy = False
        for fut in self._waiters.pop(rec.request_id, ()):
            if not fut.done():
                fut.set_result(None)
        self._on_release(rec.model)
