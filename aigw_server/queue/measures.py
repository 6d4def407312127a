"""What the queue measures per model, in one place: totals and recent latencies, submissions per hour, and the
last hour's series; fed by the engine, rebuilt at recovery, read by the stats RPCs and the metrics collector."""

from __future__ import annotations

from collections.abc import Iterable

from aigw_server.queue.jobs import JobRecord, Outcome, State
from aigw_server.queue.series import MinuteView, PastJob, QueueSeries
from aigw_server.queue.stats import ModelStats, Usage


class QueueMeasures:
    """Every configured model's counters, latency samples, hourly submissions and per-minute series."""

    def __init__(self, models: Iterable[str]) -> None:
        names = list(models)
        self._stats = {name: ModelStats() for name in names}
        self._usage = Usage()
        self._series = QueueSeries(names)

    def stats(self, model: str) -> ModelStats:
        """The model's totals and recent samples (read them; the methods below change them)."""
        return self._stats[model]

    def submitted(self, model: str, at: float) -> None:
        """A job was admitted (stored) at `at`."""
        self._stats[model].submitted += 1
        self._usage.add(model, at)

    def rejected(self, model: str) -> float | None:
        """A Submit was refused because the model was full; returns the median recent service time (None without one)."""
        stats = self._stats[model]
        stats.rejected += 1
        return stats.median_service_seconds()

    def finished(self, rec: JobRecord, outcome: Outcome, ran: bool) -> None:
        """A job ended with `outcome` (it ran when it had started before)."""
        code = outcome.error.code if outcome.error is not None else ""
        stats = self._stats[rec.model]
        stats.count_finished(outcome.state, code)
        stats.sample(rec.queued_ms(outcome.at), rec.service_ms(outcome.at), ran)
        total_ms = (outcome.at - rec.submitted_at) * 1000.0
        self._series.finished(rec.model, outcome.state, code, total_ms, rec.queued_ms(outcome.at), outcome.at)

    def depth(self, model: str, running: int, waiting: int, now: float) -> None:
        """Notes the model's running and waiting counts as they are from `now` on."""
        self._series.depth(model, running, waiting, now)

    def series(self, model: str, minutes: int, now: float) -> list[MinuteView]:
        """The model's last `minutes` minutes, oldest first."""
        return self._series.window(model, minutes, now)

    def usage_by_hour_of_week(self, since: float) -> dict[tuple[str, int], int]:
        """Submissions since `since`, summed by model and hour of the week."""
        return self._usage.by_hour_of_week(since)

    def prune_usage(self, before: float) -> None:
        """Forgets the submissions of the hours that ended before `before` (past retention)."""
        self._usage.prune(before)

    # ---- recovery

    def recover_finished(self, model: str, state: State, code: str, n: int = 1) -> None:
        """Counts `n` jobs that finished before the start (ignored for a model no longer configured)."""
        stats = self._stats.get(model)
        if stats is not None:
            stats.count_finished(state, code, n)

    def recover_sample(self, model: str, queued_ms: float, service_ms: float, ran: bool) -> None:
        """Takes a job that finished before the start as a recent latency sample."""
        stats = self._stats.get(model)
        if stats is not None:
            stats.sample(queued_ms, service_ms, ran)

    def recover_submission(self, model: str, at: float) -> None:
        """Counts a stored submission in its hour."""
        self._usage.add(model, at)

    def rebuild_series(self, jobs: Iterable[PastJob], now: float) -> None:
        """Replaces the series with the one these jobs make (finished in the last hour, or still active)."""
        self._series.rebuild(jobs, now)
