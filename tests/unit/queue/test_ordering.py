"""Grant order: priorities, FIFO within a priority, ageing, positions."""

from __future__ import annotations

from aigw_server.queue.jobs import JobRecord, Kind, Priority
from aigw_server.queue.ordering import ModelQueue, effective_priority

AGEING = 30.0


def job(rid: str, priority: Priority, seq: int, submitted_at: float = 0.0) -> JobRecord:
    return JobRecord(rid, "m", Kind.CHAT, priority, seq, submitted_at, submitted_at + 300, 3)


def order(q: ModelQueue, now: float = 0.0) -> list[str]:
    return [r.request_id for r in q.in_grant_order(now, AGEING)]


def test_high_before_normal_before_low_and_fifo_within_a_priority() -> None:
    q = ModelQueue()
    for rec in (
        job("low-1", Priority.LOW, 1),
        job("normal-1", Priority.NORMAL, 2),
        job("high-1", Priority.HIGH, 3),
        job("normal-2", Priority.NORMAL, 4),
        job("high-2", Priority.HIGH, 5),
    ):
        q.push(rec)
    assert order(q) == ["high-1", "high-2", "normal-1", "normal-2", "low-1"]
    assert q.positions(0.0, AGEING) == {"high-1": 1, "high-2": 2, "normal-1": 3, "normal-2": 4, "low-1": 5}


def test_effective_priority_rises_one_level_per_ageing_period_up_to_high() -> None:
    assert effective_priority(Priority.LOW, 0, AGEING) == Priority.LOW
    assert effective_priority(Priority.LOW, 29.9, AGEING) == Priority.LOW
    assert effective_priority(Priority.LOW, 30, AGEING) == Priority.NORMAL
    assert effective_priority(Priority.LOW, 60, AGEING) == Priority.HIGH
    assert effective_priority(Priority.LOW, 6000, AGEING) == Priority.HIGH
    assert effective_priority(Priority.LOW, 6000, 0) == Priority.LOW


def test_an_aged_low_job_is_granted_before_newer_high_jobs() -> None:
    q = ModelQueue()
    q.push(job("low-old", Priority.LOW, 1, submitted_at=0.0))
    q.push(job("high-new", Priority.HIGH, 2, submitted_at=59.0))
    assert order(q, now=59.0) == ["high-new", "low-old"]
    # After two ageing periods the LOW job competes as HIGH and wins on age.
    assert order(q, now=60.0) == ["low-old", "high-new"]


def test_low_is_granted_under_sustained_high_load() -> None:
    """Grants one job per second while a new HIGH job arrives every second: the LOW job still gets its turn."""
    q = ModelQueue()
    q.push(job("low", Priority.LOW, 0, submitted_at=0.0))
    granted_at = None
    for second in range(1, 200):
        q.push(job(f"high-{second}", Priority.HIGH, second, submitted_at=float(second)))
        q.push(job(f"high-{second}b", Priority.HIGH, 1000 + second, submitted_at=float(second)))
        head = q.in_grant_order(float(second), AGEING)[0]
        q.remove(head)
        if head.request_id == "low":
            granted_at = second
            break
    assert granted_at == 2 * AGEING


def test_requeued_job_keeps_its_place_and_removal_is_exact() -> None:
    q = ModelQueue()
    a, b, c = job("a", Priority.NORMAL, 1), job("b", Priority.NORMAL, 2), job("c", Priority.NORMAL, 3)
    for rec in (a, b, c):
        q.push(rec)
    q.remove(a)
    q.remove(b)
    assert order(q) == ["c"]
    q.push(a)
    assert order(q) == ["a", "c"]
    q.push(a)
    assert len(q) == 2
    q.remove(b)
    assert order(q) == ["a", "c"]


def test_ahead_of_a_new_job_counts_equal_or_higher_and_aged_jobs() -> None:
    q = ModelQueue()
    assert q.ahead_of_new(Priority.LOW, 0.0, AGEING) == 0
    q.push(job("n", Priority.NORMAL, 1, submitted_at=0.0))
    q.push(job("l-old", Priority.LOW, 2, submitted_at=0.0))
    q.push(job("l-new", Priority.LOW, 3, submitted_at=25.0))
    assert q.ahead_of_new(Priority.HIGH, 29.0, AGEING) == 0
    assert q.ahead_of_new(Priority.NORMAL, 29.0, AGEING) == 1
    assert q.ahead_of_new(Priority.LOW, 29.0, AGEING) == 3
    assert q.ahead_of_new(Priority.HIGH, 30.0, AGEING) == 1, "the NORMAL job has aged to HIGH"
    assert q.ahead_of_new(Priority.NORMAL, 30.0, AGEING) == 2, "and the old LOW job to NORMAL"
    assert q.ahead_of_new(Priority.HIGH, 60.0, AGEING) == 2
    assert q.ahead_of_new(Priority.NORMAL, 60.0, 0.0) == 1
