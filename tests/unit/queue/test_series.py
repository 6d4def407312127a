"""The queue's per-minute series: bucketing, percentiles and their precision, rollover of the hour, rebuild from past jobs."""

from __future__ import annotations

import random

import pytest

from aigw_server.queue.jobs import State
from aigw_server.queue.series import LATENCY_BOUNDS_MS, WINDOW_MINUTES, Histogram, PastJob, QueueSeries

T0 = 1_800_000_000.0  # a whole minute (divisible by 60)
MODEL = "m"


def series() -> QueueSeries:
    return QueueSeries([MODEL, "other"])


def test_jobs_land_in_the_minute_they_finished_by_final_state() -> None:
    s = series()
    s.finished(MODEL, State.SUCCEEDED, "", 100.0, 10.0, T0 + 5)
    s.finished(MODEL, State.SUCCEEDED, "", 200.0, 20.0, T0 + 59.9)
    s.finished(MODEL, State.FAILED, "DEADLINE_EXCEEDED", 300_000.0, 300_000.0, T0 + 60)
    s.finished(MODEL, State.FAILED, "UNAVAILABLE", 50.0, 1.0, T0 + 61)
    s.finished(MODEL, State.CANCELLED, "", 70.0, 70.0, T0 + 62)
    s.finished("other", State.SUCCEEDED, "", 1.0, 1.0, T0 + 62)
    first, second = s.window(MODEL, 2, T0 + 90)
    assert first.start == T0
    assert first.seconds == 60
    assert (first.succeeded, first.failed, first.cancelled, first.deadline_exceeded) == (2, 0, 0, 0)
    assert second.start == T0 + 60
    assert second.seconds == pytest.approx(30)
    assert (second.succeeded, second.failed, second.cancelled, second.deadline_exceeded) == (0, 2, 1, 1)
    assert first.per_minute == 2
    assert second.per_minute == pytest.approx(6.0)  # 3 in the 30 s that passed


def test_window_is_oldest_first_with_empty_minutes_and_a_length_asked() -> None:
    s = series()
    s.finished(MODEL, State.SUCCEEDED, "", 10.0, 1.0, T0)
    views = s.window(MODEL, 60, T0 + 10 * 60 + 1)
    assert len(views) == 60
    assert [v.start for v in views] == [T0 + (m - 49) * 60 for m in range(60)]
    assert [v.finished for v in views].count(1) == 1
    assert views[-11].finished == 1
    assert views[-11].start == T0
    assert len(s.window(MODEL, 1, T0 + 601)) == 1


def test_percentiles_are_within_the_documented_precision() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1.5) for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.add(v)
    ordered = sorted(values)
    for p in (0.5, 0.95, 0.99):
        true = ordered[int(p * len(ordered)) - 1]
        got = h.percentile(p)
        assert true <= got <= true * 2 ** (1 / 4) * 1.0001, (p, true, got)


def test_percentiles_of_few_values_are_clamped_to_what_was_seen() -> None:
    h = Histogram()
    h.add(123.0)
    assert h.percentile(0.5) == h.percentile(0.99) == 123.0
    h.add(10_000_000.0)  # beyond the last bound (10 minutes)
    assert h.percentile(0.99) == 10_000_000.0
    assert 123.0 <= h.percentile(0.5) <= 123.0 * 2 ** (1 / 4)
    assert Histogram().percentile(0.5) == 0.0
    assert LATENCY_BOUNDS_MS[0] == 1.0
    assert LATENCY_BOUNDS_MS[-1] >= 600_000.0


def test_minute_percentiles_and_counts_come_from_that_minute_only() -> None:
    s = series()
    for i in range(100):
        s.finished(MODEL, State.SUCCEEDED, "", float(i + 1), 0.5, T0 + 1)
    s.finished(MODEL, State.SUCCEEDED, "", 5000.0, 4000.0, T0 + 61)
    first, second = s.window(MODEL, 2, T0 + 119)
    assert first.total_ms.count == 100
    assert 50 <= first.total_ms.p50 <= 50 * 1.19
    assert 95 <= first.total_ms.p95 <= 95 * 1.19
    assert 99 <= first.total_ms.p99 <= 100
    assert first.wait_ms.p99 == 0.5
    assert (second.total_ms.p50, second.wait_ms.p50, second.total_ms.count) == (5000.0, 4000.0, 1)


def test_peaks_hold_the_depth_through_quiet_minutes() -> None:
    s = series()
    s.depth(MODEL, 1, 0, T0 + 1)
    s.depth(MODEL, 4, 7, T0 + 2)
    s.depth(MODEL, 2, 3, T0 + 30)
    # nothing changes for two minutes: the depth stays 2 running, 3 waiting
    s.depth(MODEL, 0, 0, T0 + 3 * 60 + 10)
    views = s.window(MODEL, 5, T0 + 4 * 60 + 1)
    assert [(v.peak_running, v.peak_waiting) for v in views] == [(4, 7), (2, 3), (2, 3), (2, 3), (0, 0)]


def test_an_hour_later_the_old_minutes_have_rolled_out() -> None:
    s = series()
    s.finished(MODEL, State.SUCCEEDED, "", 10.0, 1.0, T0)
    s.depth(MODEL, 5, 5, T0)
    s.depth(MODEL, 0, 0, T0 + 1)
    assert sum(v.finished for v in s.window(MODEL, 60, T0 + (WINDOW_MINUTES - 1) * 60)) == 1
    later = s.window(MODEL, 60, T0 + WINDOW_MINUTES * 60)
    assert sum(v.finished for v in later) == 0
    assert max(v.peak_running for v in later) == 0
    assert len(s.models[MODEL].minutes) <= WINDOW_MINUTES
    # a day later only one hour is kept, however long the gap
    s.finished(MODEL, State.SUCCEEDED, "", 10.0, 1.0, T0 + 86_400)
    assert len(s.models[MODEL].minutes) <= WINDOW_MINUTES
    assert sum(v.finished for v in s.window(MODEL, 60, T0 + 86_400)) == 1


def test_a_late_event_counts_in_its_own_minute_without_moving_the_depth() -> None:
    s = series()
    s.depth(MODEL, 3, 1, T0 + 125)
    s.finished(MODEL, State.SUCCEEDED, "", 10.0, 1.0, T0 + 65)
    s.depth(MODEL, 9, 9, T0 + 66)
    views = s.window(MODEL, 3, T0 + 130)
    assert views[1].finished == 1
    assert views[1].peak_running == 9
    assert (views[2].peak_running, views[2].peak_waiting) == (3, 1)
    assert (s.models[MODEL].running, s.models[MODEL].waiting) == (3, 1)


def test_unknown_models_are_ignored_when_noting_and_refused_when_read() -> None:
    s = series()
    s.finished("nope", State.SUCCEEDED, "", 1.0, 1.0, T0)
    s.depth("nope", 1, 1, T0)
    with pytest.raises(KeyError):
        s.window("nope", 1, T0)


def test_rebuild_from_past_jobs_gives_what_live_noting_gave() -> None:
    jobs = [
        PastJob(MODEL, T0 + 1, T0 + 2, T0 + 62, State.SUCCEEDED, "", 1000.0),
        PastJob(MODEL, T0 + 1.5, T0 + 3, T0 + 70, State.FAILED, "DEADLINE_EXCEEDED", 1500.0),
        PastJob(MODEL, T0 + 2, 0.0, T0 + 4, State.CANCELLED, "", 2000.0),
        PastJob(MODEL, T0 + 100, T0 + 130, 0.0),  # still running
        PastJob(MODEL, T0 + 110, 0.0, 0.0),  # still waiting
        PastJob("gone", T0, T0, T0 + 1, State.SUCCEEDED),  # a model no longer configured
    ]
    s = series()
    s.finished(MODEL, State.SUCCEEDED, "", 1.0, 1.0, T0 - 600)  # replaced by the rebuild
    s.rebuild(jobs, T0 + 150)
    views = s.window(MODEL, 3, T0 + 150)
    first, second, third = views
    assert (first.succeeded, first.failed, first.cancelled) == (0, 0, 1)
    assert (first.peak_running, first.peak_waiting) == (2, 2)
    assert (second.succeeded, second.failed, second.deadline_exceeded) == (1, 1, 1)
    assert second.total_ms.count == 2
    assert second.total_ms.p99 == pytest.approx(68_500.0)
    assert second.wait_ms.p50 >= 1000.0
    assert (second.peak_running, second.peak_waiting) == (2, 2)
    assert (third.peak_running, third.peak_waiting) == (1, 2)
    assert sum(v.finished for v in s.window(MODEL, 60, T0 + 150)) == 3
    assert (s.models[MODEL].running, s.models[MODEL].waiting) == (1, 1)


def test_an_end_and_a_start_at_one_instant_are_no_peak() -> None:
    s = series()
    s.rebuild(
        [
            PastJob(MODEL, T0 + 1, T0 + 1, T0 + 5, State.SUCCEEDED),
            PastJob(MODEL, T0 + 1, T0 + 5, T0 + 9, State.SUCCEEDED),
        ],
        T0 + 10,
    )
    (view,) = s.window(MODEL, 1, T0 + 10)
    assert view.peak_running == 1
    assert view.peak_waiting == 1
