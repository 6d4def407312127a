"""Each model's last hour in one-minute buckets: finished jobs by final state, latency histograms, peak depth.

Latencies go into a fixed log-scale histogram per minute: bucket i holds values up to
`LATENCY_BOUNDS_MS[i]`, each bound 2^(1/4) (about 19 %) above the one before, from 1 ms to 10 minutes.
A percentile is the upper bound of the bucket holding its nearest rank, clamped to the smallest and
largest value seen in the minute; so it is never below the true value and at most 19 % above it
(values under 1 ms read as 1 ms at most, over 10 minutes as the largest seen).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from aigw_server.queue.jobs import DEADLINE_CODE, State

BUCKET_SECONDS = 60
WINDOW_MINUTES = 60
_STEPS_PER_DOUBLING = 4
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    2.0 ** (i / _STEPS_PER_DOUBLING) for i in range(math.ceil(math.log2(600_000.0) * _STEPS_PER_DOUBLING) + 1)
)


def minute_of(t: float) -> int:
    """Minutes since the epoch."""
    return int(t // BUCKET_SECONDS)


@dataclass
class Histogram:
    """Counts of latencies per fixed bucket (sparse), with the smallest and largest seen."""

    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    low: float = math.inf
    high: float = 0.0

    def add(self, value_ms: float) -> None:
        value = max(0.0, value_ms)
        index = bisect.bisect_left(LATENCY_BOUNDS_MS, value)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def percentile(self, p: float) -> float:
        """The nearest-rank p-quantile (0 < p <= 1) to the precision of the buckets; 0 when empty."""
        return self.percentiles((p,))[0]

    def percentiles(self, ps: tuple[float, ...]) -> list[float]:
        """Several nearest-rank quantiles (ascending `ps`) in one pass over the buckets."""
        if not self.n:
            return [0.0 for _ in ps]
        ranks = [max(1, math.ceil(p * self.n)) for p in ps]
        found: list[float] = []
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            while len(found) < len(ranks) and seen >= ranks[len(found)]:
                bound = LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else self.high
                found.append(min(max(bound, self.low), self.high))
        return found + [self.high] * (len(ranks) - len(found))


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p50, p95 and p99 of a minute's latencies in milliseconds, and how many there were."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    count: int = 0


def quantiles(h: Histogram) -> Quantiles:
    p50, p95, p99 = h.percentiles((0.50, 0.95, 0.99))
    return Quantiles(p50, p95, p99, h.n)


@dataclass
class Minute:
    """One model's minute: finished jobs by final state, their latencies, and the peak running and waiting."""

    minute: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    deadline_exceeded: int = 0
    total_ms: Histogram = field(default_factory=Histogram)
    wait_ms: Histogram = field(default_factory=Histogram)
    peak_running: int = 0
    peak_waiting: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class MinuteView:
    """A minute as callers read it: `seconds` is how much of it has passed (60 but for the current one)."""

    start: float
    seconds: float
    succeeded: int
    failed: int
    cancelled: int
    deadline_exceeded: int
    total_ms: Quantiles
    wait_ms: Quantiles
    peak_running: int
    peak_waiting: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def per_minute(self) -> float:
        """Throughput: jobs finished per minute over the part of the minute that has passed."""
        return self.finished * BUCKET_SECONDS / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PastJob:
    """What the rebuild needs of a stored job: its times (0 when it has not reached that point) and final state."""

    model: str
    submitted_at: float
    started_at: float
    finished_at: float
    state: State | None = None
    code: str = ""
    wait_ms: float = 0.0


class ModelSeries:
    """One model's minutes, oldest first and contiguous up to the latest one touched, and its current depth."""

    def __init__(self) -> None:
        self.minutes: dict[int, Minute] = {}
        self.last = -1
        self.running = 0
        self.waiting = 0

    def at(self, minute: int) -> Minute | None:
        """The minute's bucket, opening those up to it (each starting at the current depth); None if out of the window."""
        if minute <= self.last:
            return self.minutes.get(minute)
        for m in range(max(self.last + 1, minute - WINDOW_MINUTES + 1), minute + 1):
            self.minutes[m] = Minute(m, peak_running=self.running, peak_waiting=self.waiting)
        self.last = minute
        for old in [m for m in self.minutes if m <= minute - WINDOW_MINUTES]:
            del self.minutes[old]
        return self.minutes[minute]

    def depth(self, running: int, waiting: int, now: float) -> None:
        bucket = self.at(minute_of(now))
        if minute_of(now) >= self.last:
            self.running, self.waiting = running, waiting
        if bucket is not None:
            bucket.peak_running = max(bucket.peak_running, running)
            bucket.peak_waiting = max(bucket.peak_waiting, waiting)

    def finished(self, state: State, code: str, total_ms: float, wait_ms: float, now: float) -> None:
        bucket = self.at(minute_of(now))
        if bucket is None:
            return
        if state == State.SUCCEEDED:
            bucket.succeeded += 1
        elif state == State.CANCELLED:
            bucket.cancelled += 1
        elif state == State.FAILED:
            bucket.failed += 1
            bucket.deadline_exceeded += int(code == DEADLINE_CODE)
        else:
            return
        bucket.total_ms.add(total_ms)
        bucket.wait_ms.add(wait_ms)


class QueueSeries:
    """Every model's rolling last hour. Time is always passed in; nothing here reads a clock or does I/O."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = {name: ModelSeries() for name in models}

    def depth(self, model: str, running: int, waiting: int, now: float) -> None:
        """Notes the model's running and waiting counts as they are from `now` on."""
        series = self.models.get(model)
        if series is not None:
            series.depth(running, waiting, now)

    def finished(self, model: str, state: State, code: str, total_ms: float, wait_ms: float, now: float) -> None:
        """Counts a job that reached its final state at `now`, with its total time and its time queued."""
        series = self.models.get(model)
        if series is not None:
            series.finished(state, code, total_ms, wait_ms, now)

    def window(self, model: str, minutes: int, now: float) -> list[MinuteView]:
        """The last `minutes` minutes up to the current one, oldest first, empty minutes included."""
        series = self.models[model]
        current = minute_of(now)
        series.at(current)
        views = []
        for m in range(current - minutes + 1, current + 1):
            bucket = series.minutes.get(m) or Minute(m)
            seconds = min(float(BUCKET_SECONDS), now - m * BUCKET_SECONDS) if m == current else float(BUCKET_SECONDS)
            views.append(_view(bucket, seconds))
        return views

    def rebuild(self, jobs: Iterable[PastJob], now: float) -> None:
        """Replaces every model's series with the one these jobs make (finished ones and those still active at `now`).

        A job waits from submission until it starts (or ends without starting) and runs from its start to its
        end; a job requeued after a failed attempt counts as running from its first start to its end.
        """
        changes: dict[str, list[tuple[float, int, int, int]]] = {name: [] for name in self.models}
        ends: dict[str, list[PastJob]] = {name: [] for name in self.models}
        for job in jobs:
            if job.model not in changes:
                continue
            steps = changes[job.model]
            steps.append((job.submitted_at, 1, 0, 1))
            if job.started_at:
                steps.append((job.started_at, 1, 1, -1))
            if job.finished_at:
                steps.append((job.finished_at, 0, -1 if job.started_at else 0, 0 if job.started_at else -1))
                ends[job.model].append(job)
        for name in self.models:
            self.models[name] = ModelSeries()
            self._replay(name, changes[name], ends[name])
            self.depth(name, self.models[name].running, self.models[name].waiting, now)

    def _replay(self, model: str, steps: list[tuple[float, int, int, int]], ends: list[PastJob]) -> None:
        # At one instant, ends come before starts: a slot handed straight on is not a peak of two.
        events: list[tuple[float, int, PastJob | None, int, int]] = [(t, order, None, dr, dw) for t, order, dr, dw in steps]
        events += [(job.finished_at, 0, job, 0, 0) for job in ends]
        running = waiting = 0
        for t, _, job, dr, dw in sorted(events, key=lambda e: (e[0], e[1])):
            if job is not None:
                total = max(0.0, job.finished_at - job.submitted_at) * 1000.0
                self.finished(model, job.state or State.FAILED, job.code, total, job.wait_ms, t)
                continue
            running, waiting = max(0, running + dr), max(0, waiting + dw)
            self.depth(model, running, waiting, t)


def _view(b: Minute, seconds: float) -> MinuteView:
    return MinuteView(
        start=float(b.minute * BUCKET_SECONDS),
        seconds=seconds,
        succeeded=b.succeeded,
        failed=b.failed,
        cancelled=b.cancelled,
        deadline_exceeded=b.deadline_exceeded,
        total_ms=quantiles(b.total_ms),
        wait_ms=quantiles(b.wait_ms),
        peak_running=b.peak_running,
        peak_waiting=b.peak_waiting,
    )
