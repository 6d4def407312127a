"""Queue metrics kept in memory: totals and recent latencies per model, and submissions per model and hour."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from aigw_server.queue.jobs import State

RECENT_SAMPLES = 1000
HOURS_PER_WEEK = 168
# 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week (0 = Monday 00:00 UTC).
EPOCH_HOUR_OF_WEEK = 72


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of a sample, in milliseconds."""

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    count: int = 0


def percentiles(samples: list[float] | deque[float]) -> Percentiles:
    """p50/p90/p99 by the nearest-rank method (0 for an empty sample)."""
    if not samples:
        return Percentiles()
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * n) - 1)]

    return Percentiles(rank(0.50), rank(0.90), rank(0.99), n)


@dataclass
class ModelStats:
    """One model's counters since the store was created, and its recent queue waits and service times."""

    submitted: int = 0
    rejected: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    waits_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))
    services_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_SAMPLES))

    def count_finished(self, state: State, code: str, n: int = 1) -> None:
        """Adds `n` finished jobs to the totals."""
        if state == State.SUCCEEDED:
            self.succeeded += n
        elif state == State.FAILED:
            self.failed += n
            self.failures[code or "UNKNOWN"] = self.failures.get(code or "UNKNOWN", 0) + n
        elif state == State.CANCELLED:
            self.cancelled += n

    def sample(self, queued_ms: float, service_ms: float, ran: bool) -> None:
        """Records one finished job's queue wait, and its service time when it ran."""
        self.waits_ms.append(queued_ms)
        if ran:
            self.services_ms.append(service_ms)

    def median_service_seconds(self) -> float | None:
        """The median recent service time, or None without samples."""
        if not self.services_ms:
            return None
        return percentiles(self.services_ms).p50 / 1000.0


def epoch_hour(t: float) -> int:
    """Hours since the epoch."""
    return int(t // 3600)


def hour_of_week(hour: int) -> int:
    """Hour of the week (0 = Monday 00:00 UTC) of an epoch hour."""
    return (hour + EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


class Usage:
    """Submissions per model and epoch hour, over the retention period."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, model: str, submitted_at: float, n: int = 1) -> None:
        key = (model, epoch_hour(submitted_at))
        self._counts[key] = self._counts.get(key, 0) + n

    def prune(self, before: float) -> None:
        """Forgets the hours that ended before `before`."""
        oldest = epoch_hour(before)
        for key in [k for k in self._counts if k[1] < oldest]:
            del self._counts[key]

    def by_hour_of_week(self, since: float) -> dict[tuple[str, int], int]:
        """Submissions since `since` (from the start of its hour), summed by model and hour of the week."""
        first = epoch_hour(since)
        buckets: dict[tuple[str, int], int] = {}
        for (model, hour), n in self._counts.items():
            if hour >= first:
                key = (model, hour_of_week(hour))
                buckets[key] = buckets.get(key, 0) + n
        return buckets
