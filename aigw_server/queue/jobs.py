"""Jobs as the queue keeps them in memory: states, attempts, leases, errors, and the transitions between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class State(IntEnum):
    """Lifecycle state (values as in aigw.common.v1.JobState)."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class Kind(IntEnum):
    """What a job carries (values as in aigw.common.v1.JobKind)."""

    CHAT = 1
    OCR = 2


class Priority(IntEnum):
    """Queue priority (values as in aigw.common.v1.Priority)."""

    LOW = 1
    NORMAL = 2
    HIGH = 3


# Why a lease holder must stop, as Heartbeat answers it (stable strings: workers match them).
STOP_CANCELLED = "cancelled"
STOP_DEADLINE = "deadline exceeded"
STOP_LEASE_LOST = "lease lost"

LEASE_LOST_CODE = "LEASE_LOST"
DEADLINE_CODE = "DEADLINE_EXCEEDED"
CANCELLED_CODE = "CANCELLED"

# Why an attempt ended without ending the job.
END_FAILED = "failed"
END_LEASE_LOST = "lease_lost"
END_RELEASED = "released"


@dataclass(frozen=True, slots=True)
class JobError:
    """A failure of one attempt (attempt >= 1) or of the job as a whole (attempt 0)."""

    code: str
    message: str
    attempt: int = 0
    backend: str = ""
    at: float = 0.0


@dataclass(slots=True)
class Lease:
    """The right to run one attempt; `delivered` is False until a worker has received it."""

    lease_id: str
    grant: int
    attempt: int
    worker_id: str
    granted_at: float
    expires_at: float
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class Grant:
    """A stored grant: attempt `attempt` leased as grant number `grant` (grant numbers never repeat)."""

    grant: int
    lease_id: str
    worker_id: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class GrantEnd:
    """A stored end of a grant that did not end the job: the job is queued again."""

    grant: int
    reason: str
    counted: bool
    error: JobError | None
    at: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended: the last write of its life."""

    state: State
    at: float
    error: JobError | None = None
    result: bytes = b""
    backend: str = ""
    lease_id: str = ""
    attempt_errors: tuple[JobError, ...] = ()


@dataclass(slots=True, eq=False)
class JobRecord:
    """One job: what was submitted, and where it stands now."""

    request_id: str
    model: str
    kind: Kind
    priority: Priority
    seq: int
    submitted_at: float
    deadline: float
    max_attempts: int
    client_id: str = ""
    subject: str = ""
    idempotency_key: str = ""
    owner_id: str = ""
    payload: bytes = b""
    payload_apart: bool = False
    state: State = State.QUEUED
    grants: int = 0
    attempt: int = 0
    lease: Lease | None = None
    attempt_errors: list[JobError] = field(default_factory=list)
    error: JobError | None = None
    result: bytes = b""
    backend: str = ""
    progress: int = 0
    cancel_requested: bool = False
    queued_since: float = 0.0
    queued_before: float = 0.0
    started_at: float = 0.0
    ran_for: float = 0.0
    finished_at: float = 0.0
    finished_lease: str = ""
    owner_seen: float = 0.0
    owner_waiting: bool = False
    busy: bool = False
    in_doubt: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def queued_ms(self, now: float) -> float:
        """Milliseconds spent queued over all attempts (up to now while queued)."""
        current = now - self.queued_since if self.state == State.QUEUED else 0.0
        return (self.queued_before + max(0.0, current)) * 1000.0

    def service_ms(self, now: float) -> float:
        """Milliseconds the latest attempt has run (until it ended)."""
        if self.state == State.RUNNING:
            return max(0.0, now - self.started_at) * 1000.0
        return self.ran_for * 1000.0


def apply_grant(rec: JobRecord, grant: Grant, ttl: float, now: float, delivered: bool) -> Lease:
    """The job runs under `grant`: RUNNING with a fresh lease."""
    rec.state = State.RUNNING
    rec.grants = grant.grant
    rec.attempt = grant.attempt
    rec.queued_before += max(0.0, grant.at - rec.queued_since)
    rec.started_at = grant.at
    rec.ran_for = 0.0
    rec.progress = 0
    rec.backend = ""
    rec.lease = Lease(grant.lease_id, grant.grant, grant.attempt, grant.worker_id, grant.at, now + ttl, delivered)
    return rec.lease


def apply_end(rec: JobRecord, end: GrantEnd) -> None:
    """The grant ended without ending the job: QUEUED again, the attempt counted unless released."""
    rec.state = State.QUEUED
    rec.lease = None
    rec.ran_for = max(0.0, end.at - rec.started_at)
    if not end.counted:
        rec.attempt = max(0, rec.attempt - 1)
    if end.error is not None:
        rec.attempt_errors.append(end.error)
    rec.queued_since = end.at


def apply_outcome(rec: JobRecord, outcome: Outcome) -> None:
    """The job ended."""
    if rec.state == State.QUEUED:
        rec.queued_before += max(0.0, outcome.at - rec.queued_since)
    elif rec.state == State.RUNNING:
        rec.ran_for = max(0.0, outcome.at - rec.started_at)
    rec.state = outcome.state
    rec.finished_at = outcome.at
    rec.error = outcome.error
    rec.result = outcome.result
    rec.attempt_errors = list(outcome.attempt_errors)
    rec.finished_lease = outcome.lease_id
    if outcome.backend:
        rec.backend = outcome.backend
    rec.lease = None


def replay(rec: JobRecord, grants: list[Grant], ends: list[GrantEnd], ttl: float, now: float) -> None:
    """Rebuilds attempts, errors and the current lease of a stored job from its grants and their ends."""
    rec.state = State.QUEUED
    rec.grants = 0
    rec.attempt = 0
    rec.lease = None
    rec.attempt_errors = []
    rec.queued_since = rec.submitted_at
    rec.queued_before = 0.0
    ended = {e.grant: e for e in ends}
    for grant in sorted(grants, key=lambda g: g.grant):
        apply_grant(rec, grant, ttl, now, delivered=True)
        end = ended.get(grant.grant)
        if end is not None:
            apply_end(rec, end)


def succeeded(rec: JobRecord, lease_id: str, result: bytes, backend: str, now: float) -> Outcome:
    """The outcome of a completed attempt (CANCELLED instead when cancellation was asked for meanwhile)."""
    if rec.cancel_requested:
        return cancelled(rec, "cancelled while running; the result was discarded", now, lease_id)
    return Outcome(State.SUCCEEDED, now, None, result, backend, lease_id, tuple(rec.attempt_errors))


def cancelled(rec: JobRecord, message: str, now: float, lease_id: str = "") -> Outcome:
    """The outcome of a cancellation."""
    error = JobError(CANCELLED_CODE, message, 0, rec.backend, now)
    return Outcome(State.CANCELLED, now, error, b"", rec.backend, lease_id, tuple(rec.attempt_errors))


def deadline_passed(rec: JobRecord, now: float) -> Outcome:
    """The outcome of a job past its deadline, queued or running."""
    waited = rec.deadline - rec.submitted_at
    where = "while running" if rec.state == State.RUNNING else "while queued"
    error = JobError(DEADLINE_CODE, f"the request did not finish within its {waited:g} s deadline ({where})", 0, rec.backend, now)
    lease_id = rec.lease.lease_id if rec.lease else ""
    return Outcome(State.FAILED, now, error, b"", rec.backend, lease_id, tuple(rec.attempt_errors))


def after_failure(rec: JobRecord, error: JobError, retryable: bool, now: float) -> GrantEnd | Outcome:
    """What a failed attempt leads to: another attempt while any remain, otherwise the job fails (or is cancelled)."""
    lease = rec.lease
    assert lease is not None, "only a running job's attempt can fail"
    if rec.cancel_requested or error.code == CANCELLED_CODE:
        return cancelled(rec, error.message if error.code == CANCELLED_CODE else "cancelled while running", now, lease.lease_id)
    if retryable and rec.attempt < rec.max_attempts:
        reason = END_LEASE_LOST if error.code == LEASE_LOST_CODE else END_FAILED
        return GrantEnd(lease.grant, reason, True, error, now)
    errors = (*rec.attempt_errors, error)
    if retryable:
        message = f"all {len(errors)} attempts failed; the last: {error.message}"
        final = JobError(error.code, message, 0, error.backend, now)
    else:
        final = error
    return Outcome(State.FAILED, now, final, b"", rec.backend, lease.lease_id, errors)


def released(rec: JobRecord, note: str, now: float) -> GrantEnd:
    """A lease given back unused: the attempt does not count."""
    lease = rec.lease
    assert lease is not None, "only a running job can be released"
    return GrantEnd(lease.grant, END_RELEASED, False, None, now, note)


def lease_lost(rec: JobRecord, now: float) -> JobError:
    """The error recorded when a lease lapsed without a heartbeat."""
    lease = rec.lease
    assert lease is not None, "only a running job can lose its lease"
    message = f"the worker {lease.worker_id or '(unknown)'} stopped renewing its lease (attempt {lease.attempt})"
    return JobError(LEASE_LOST_CODE, message, lease.attempt, rec.backend, now)
