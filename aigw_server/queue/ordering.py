"""Grant order of one model's queue: HIGH > NORMAL > LOW, FIFO within a priority, with ageing.

Ageing rule: a job's effective priority rises one level for every `ageing_seconds` it has waited
since submission, up to HIGH. Jobs are granted by effective priority, then by admission order
(`seq`), so a LOW job waits at most 2 x ageing_seconds before it competes with new HIGH jobs as an
equal, and then wins on age.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator

from aigw_server.queue.jobs import JobRecord, Priority


def effective_priority(priority: int, waited: float, ageing_seconds: float) -> int:
    """The priority a job competes with after waiting `waited` seconds."""
    if ageing_seconds <= 0 or waited < ageing_seconds:
        return priority
    return min(int(Priority.HIGH), priority + int(waited // ageing_seconds))


class ModelQueue:
    """One model's queued jobs (one FIFO lane per priority) and the request ids holding its running slots."""

    def __init__(self) -> None:
        self._lanes: dict[int, list[tuple[int, str]]] = {int(p): [] for p in Priority}
        self._queued: dict[str, JobRecord] = {}
        self.running: set[str] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._queued

    def push(self, rec: JobRecord) -> None:
        """Queues a job in its lane by admission order (a requeued job keeps its place)."""
        if rec.request_id in self._queued:
            return
        insort(self._lanes[int(rec.priority)], (rec.seq, rec.request_id))
        self._queued[rec.request_id] = rec

    def remove(self, rec: JobRecord) -> None:
        """Takes a job out of its lane (granted, cancelled or expired)."""
        if self._queued.pop(rec.request_id, None) is None:
            return
        lane = self._lanes[int(rec.priority)]
        i = bisect_left(lane, (rec.seq, rec.request_id))
        if i < len(lane) and lane[i][1] == rec.request_id:
            del lane[i]

    def _order_key(self, now: float, ageing_seconds: float) -> Callable[[tuple[int, str]], tuple[int, int]]:
        def key(item: tuple[int, str]) -> tuple[int, int]:
            rec = self._queued[item[1]]
            return (-effective_priority(rec.priority, now - rec.submitted_at, ageing_seconds), rec.seq)

        return key

    def iter_grant_order(self, now: float, ageing_seconds: float) -> Iterator[JobRecord]:
        """The queued jobs, first granted first, lazily: each lane is already in order, so the lanes are merged.

        The queue must not change while the iterator is in use.
        """
        key = self._order_key(now, ageing_seconds)
        for _, request_id in heapq.merge(*self._lanes.values(), key=key):
            yield self._queued[request_id]

    def in_grant_order(self, now: float, ageing_seconds: float) -> list[JobRecord]:
        """Every queued job, first granted first."""
        return list(self.iter_grant_order(now, ageing_seconds))

    def positions(self, now: float, ageing_seconds: float) -> dict[str, int]:
        """1-based positions of the queued jobs in grant order."""
        return {rec.request_id: i for i, rec in enumerate(self.iter_grant_order(now, ageing_seconds), start=1)}

    def ahead_of_new(self, priority: int, now: float, ageing_seconds: float) -> int:
        """How many queued jobs would be granted before a job submitted now with `priority`."""
        ahead = 0
        for base, lane in self._lanes.items():
            if base >= priority or ageing_seconds <= 0:
                ahead += len(lane) if base >= priority else 0
                continue
            # A lower lane's job is ahead once it has aged up to `priority`: submitted at or before this time.
            cutoff = now - (priority - base) * ageing_seconds
            ahead += bisect_right(lane, cutoff, key=lambda item: self._queued[item[1]].submitted_at)
        return ahead
