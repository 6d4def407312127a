"""Leases, retries, deadlines and cancellation as pure transitions of a job record."""

from __future__ import annotations

from aigw_server.queue.jobs import (
    END_LEASE_LOST,
    END_RELEASED,
    Grant,
    GrantEnd,
    JobError,
    JobRecord,
    Kind,
    Outcome,
    Priority,
    State,
    after_failure,
    apply_end,
    apply_grant,
    apply_outcome,
    cancelled,
    deadline_passed,
    lease_lost,
    released,
    replay,
    succeeded,
)

TTL = 10.0


def queued(max_attempts: int = 3) -> JobRecord:
    return JobRecord("r1", "m", Kind.CHAT, Priority.NORMAL, 1, 100.0, 400.0, max_attempts, queued_since=100.0)


def grant(rec: JobRecord, at: float, worker: str = "w") -> None:
    apply_grant(rec, Grant(rec.grants + 1, f"lease-{rec.grants + 1}", worker, rec.attempt + 1, at), TTL, at, delivered=True)


def test_grant_starts_a_lease_and_counts_the_queue_wait() -> None:
    rec = queued()
    grant(rec, 103.0)
    assert rec.state == State.RUNNING
    assert rec.attempt == 1
    assert rec.lease is not None
    assert rec.lease.lease_id == "lease-1"
    assert rec.lease.expires_at == 113.0
    assert rec.queued_ms(200.0) == 3000.0
    assert rec.service_ms(104.5) == 1500.0


def test_lapsed_leases_requeue_until_the_attempts_are_used_then_fail_with_every_reason() -> None:
    rec = queued(max_attempts=3)
    reasons = []
    for n in range(1, 4):
        grant(rec, 100.0 + 20 * n)
        error = lease_lost(rec, 115.0 + 20 * n)
        reasons.append(error.message)
        assert error.code == "LEASE_LOST"
        assert error.attempt == n
        decision = after_failure(rec, error, True, 115.0 + 20 * n)
        if n < 3:
            assert isinstance(decision, GrantEnd)
            assert decision.reason == END_LEASE_LOST
            assert decision.counted
            apply_end(rec, decision)
            assert rec.state == State.QUEUED
            assert rec.lease is None
    assert isinstance(decision, Outcome)
    assert decision.state == State.FAILED
    assert [e.message for e in decision.attempt_errors] == reasons
    assert decision.error is not None
    assert "all 3 attempts failed" in decision.error.message


def test_non_retryable_failure_ends_the_job_at_once() -> None:
    rec = queued()
    grant(rec, 101.0)
    bad = JobError("INVALID_ARGUMENT", "prompt too long", 1, "b1", 102.0)
    decision = after_failure(rec, bad, False, 102.0)
    assert isinstance(decision, Outcome)
    assert decision.state == State.FAILED
    assert decision.error == bad
    assert decision.attempt_errors == (bad,)


def test_release_gives_the_attempt_back() -> None:
    rec = queued(max_attempts=1)
    grant(rec, 101.0)
    end = released(rec, "no backend holds the model", 102.0)
    assert end.reason == END_RELEASED
    assert not end.counted
    apply_end(rec, end)
    assert rec.attempt == 0
    assert rec.state == State.QUEUED
    assert rec.attempt_errors == []
    grant(rec, 103.0)
    assert rec.attempt == 1
    assert rec.grants == 2
    decision = after_failure(rec, JobError("UNAVAILABLE", "backend down"), True, 104.0)
    assert isinstance(decision, Outcome)
    assert decision.state == State.FAILED


def test_cancellation_wins_over_retry_and_over_a_late_result() -> None:
    rec = queued()
    grant(rec, 101.0)
    rec.cancel_requested = True
    decision = after_failure(rec, JobError("UNAVAILABLE", "backend down"), True, 102.0)
    assert isinstance(decision, Outcome)
    assert decision.state == State.CANCELLED
    outcome = succeeded(rec, "lease-1", b"result", "b1", 103.0)
    assert outcome.state == State.CANCELLED
    assert outcome.result == b""
    by_worker = after_failure(rec, JobError("CANCELLED", "client went away"), True, 103.0)
    assert isinstance(by_worker, Outcome)
    assert by_worker.state == State.CANCELLED


def test_deadline_fails_queued_and_running_jobs() -> None:
    rec = queued()
    outcome = deadline_passed(rec, 400.0)
    assert outcome.state == State.FAILED
    assert outcome.error is not None
    assert outcome.error.code == "DEADLINE_EXCEEDED"
    assert "while queued" in outcome.error.message
    grant(rec, 390.0)
    running = deadline_passed(rec, 400.0)
    assert running.error is not None
    assert "while running" in running.error.message
    assert running.lease_id == "lease-1"


def test_outcome_records_timings() -> None:
    rec = queued()
    grant(rec, 102.0)
    apply_outcome(rec, succeeded(rec, "lease-1", b"ok", "b1", 104.0))
    assert rec.state == State.SUCCEEDED
    assert rec.terminal
    assert rec.queued_ms(999.0) == 2000.0
    assert rec.service_ms(999.0) == 2000.0
    assert rec.backend == "b1"
    assert rec.finished_lease == "lease-1"
    queued_rec = queued()
    apply_outcome(queued_rec, cancelled(queued_rec, "by admin", 105.0))
    assert queued_rec.state == State.CANCELLED
    assert queued_rec.queued_ms(999.0) == 5000.0
    assert queued_rec.service_ms(999.0) == 0.0


def test_replay_rebuilds_attempts_errors_and_the_live_lease() -> None:
    rec = queued()
    error = JobError("UNAVAILABLE", "backend down", 1)
    grants = [
        Grant(1, "l1", "w1", 1, 101.0),
        Grant(2, "l2", "w2", 2, 110.0),
        Grant(3, "l3", "w3", 2, 130.0),
    ]
    ends = [GrantEnd(1, "failed", True, error, 105.0), GrantEnd(2, END_RELEASED, False, None, 120.0)]
    replay(rec, grants, ends, TTL, now=500.0)
    assert rec.state == State.RUNNING
    assert rec.attempt == 2
    assert rec.grants == 3
    assert rec.attempt_errors == [error]
    assert rec.lease is not None
    assert rec.lease.lease_id == "l3"
    assert rec.lease.worker_id == "w3"
    assert rec.lease.expires_at == 510.0, "a recovered lease gets one full TTL from the restart"
    assert rec.queued_ms(500.0) == (1 + 5 + 10) * 1000.0
    ended = queued()
    replay(ended, grants, [*ends, GrantEnd(3, "failed", True, error, 140.0)], TTL, now=500.0)
    assert ended.state == State.QUEUED
    assert ended.lease is None
    assert ended.attempt_errors == [error, error]
    assert ended.queued_ms(150.0) == (1 + 5 + 10 + 10) * 1000.0
