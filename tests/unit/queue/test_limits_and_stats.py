"""Admission capacity, retry estimates, runtime config changes, percentiles and usage buckets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aigw_server.queue.jobs import State
from aigw_server.queue.model_settings import ModelSettings, Patch, admits, apply_patch, retry_after, settings_from_config
from aigw_server.queue.stats import ModelStats, Usage, hour_of_week, percentiles
from aigw_server.runtime.config import parse_config
from aigw_server.runtime.errors import InvalidArgument


def settings(max_concurrent: int = 10, max_waiting: int = 10) -> ModelSettings:
    return ModelSettings("m", "chat", 0, max_concurrent, max_waiting, 300.0, 3, True)


def test_capacity_is_running_slots_plus_waiting_places() -> None:
    s = settings()
    assert admits(queued=19, running=0, settings=s)
    assert not admits(queued=20, running=0, settings=s)
    assert admits(queued=9, running=10, settings=s)
    assert not admits(queued=10, running=10, settings=s), "the 21st job: 10 running and 10 waiting"
    assert not admits(queued=2, running=10, settings=settings(max_waiting=2))
    assert admits(queued=0, running=9, settings=settings(max_waiting=0))
    assert not admits(queued=1, running=9, settings=settings(max_waiting=0))


def test_retry_after_follows_recent_service_times() -> None:
    s = settings()
    just_started = [0.1] * 10
    assert retry_after(10, just_started, s, service_seconds=5.0) == 4.9
    assert retry_after(10, just_started, s, service_seconds=None) == 0.9
    assert retry_after(10, [0.0], settings(max_concurrent=1), service_seconds=120.0) == 60.0


def test_retry_after_waits_for_the_first_running_job_to_be_due() -> None:
    s = settings(max_concurrent=16)
    assert retry_after(10, [0.2] * 16, s, service_seconds=1.8) == 1.6, "not 1.8 / 16 = 0.113 s: all 16 started together"
    staggered = [1.7, 1.0, 0.5] + [0.0] * 13
    assert retry_after(10, staggered, s, service_seconds=1.8) == 0.45, "the overdue-free nearest finish, floored at a quarter"
    assert retry_after(12, staggered, s, service_seconds=1.8) == 1.3, "three slots must free: the third-nearest finish"


def test_defaults_come_from_the_model_then_the_queue_section() -> None:
    cfg = parse_config(
        {
            "queue": {"max_waiting": 7, "timeout": 120, "max_attempts": 2},
            "models": {"a": {"kind": "chat", "max_concurrent": 4}, "b": {"kind": "ocr", "max_waiting": 3, "timeout": 30}},
        },
        env={},
    )
    a, b = settings_from_config(cfg, "a"), settings_from_config(cfg, "b")
    assert (a.max_concurrent, a.max_waiting, a.timeout_seconds, a.max_attempts, a.version) == (4, 7, 120.0, 2, 0)
    assert (b.max_concurrent, b.max_waiting, b.timeout_seconds, b.default_resolution) == (10, 3, 30.0, 3)


def test_patch_raises_the_version_and_records_who() -> None:
    updated = apply_patch(settings(), Patch(max_waiting=2, enabled=False), "alice", 1000.0)
    assert (updated.version, updated.max_waiting, updated.enabled, updated.max_concurrent) == (1, 2, False, 10)
    assert (updated.updated_by, updated.updated_at) == ("alice", 1000.0)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (Patch(), "patch"),
        (Patch(max_concurrent=0), "patch.max_concurrent"),
        (Patch(max_waiting=100_001), "patch.max_waiting"),
        (Patch(timeout_seconds=float("nan")), "patch.timeout_seconds"),
        (Patch(max_attempts=11), "patch.max_attempts"),
        (Patch(default_resolution=3), "patch.default_resolution"),
    ],
)
def test_bad_patches_are_refused_with_the_field_named(patch: Patch, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        apply_patch(settings(), patch, "bob", 0.0)
    assert err.value.field == field


def test_percentiles_by_nearest_rank() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p.p50, p.p90, p.p99, p.count) == (50.0, 90.0, 99.0, 100)
    assert percentiles([]).count == 0


def test_stats_count_failures_by_reason() -> None:
    stats = ModelStats()
    stats.count_finished(State.SUCCEEDED, "")
    stats.count_finished(State.FAILED, "DEADLINE_EXCEEDED")
    stats.count_finished(State.FAILED, "DEADLINE_EXCEEDED")
    stats.count_finished(State.FAILED, "")
    stats.count_finished(State.CANCELLED, "CANCELLED")
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 3, 1)
    assert stats.failures == {"DEADLINE_EXCEEDED": 2, "UNKNOWN": 1}


def test_hour_of_week_starts_monday_midnight_utc() -> None:
    monday = datetime(2024, 1, 1, tzinfo=UTC).timestamp() // 3600
    assert hour_of_week(int(monday)) == 0
    assert hour_of_week(int(monday) + 25) == 25
    assert hour_of_week(int(monday) - 1) == 167


def test_usage_sums_by_model_and_hour_of_week_within_the_window() -> None:
    usage = Usage()
    monday = datetime(2024, 1, 1, 9, 30, tzinfo=UTC).timestamp()
    week = 7 * 86_400
    usage.add("a", monday)
    usage.add("a", monday + 60)
    usage.add("a", monday - week)
    usage.add("b", monday + 3600)
    assert usage.by_hour_of_week(since=monday - 3600) == {("a", 9): 2, ("b", 10): 1}
    assert usage.by_hour_of_week(since=monday - week) == {("a", 9): 3, ("b", 10): 1}
    usage.prune(before=monday)
    assert usage.by_hour_of_week(since=0) == {("a", 9): 2, ("b", 10): 1}
