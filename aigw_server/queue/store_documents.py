"""The stored shape of jobs: immutable job documents, per-attempt events, and one outcome document per finished job.

    jobs          {_id: request_id, model, kind, priority, seq, submitted_at, deadline, max_attempts, client_id, subject,
                   idempotency_key, idem, owner_id, payload | payload_apart, grant?, expires_at}   written once at Submit
    job_events    {_id: "<rid>/g<n>", rid, t: "g", n, lease_id, worker_id, attempt, at}             grant n (attempt leased)
                  {_id: "<rid>/e<n>", rid, t: "e", n, reason, counted, error?, note, at}           grant n ended, job requeued
                  {_id: "<rid>/x", rid, t: "x", by, at}                                           cancellation asked for
    job_outcomes  {_id: request_id, state, error, attempt_errors, result, lease_id, finished_at, ...}  the job ended
    job_payloads  {_id: request_id, payload, expires_at}                                          large payloads only

Every transition is an insert of a document whose _id names the transition, so the database
itself refuses a second grant of the same number or a second outcome of the same job.
"""

from __future__ import annotations

from typing import Any, Protocol

from bson.binary import Binary

from aigw_server.queue.jobs import Grant, GrantEnd, JobError, JobRecord, Kind, Outcome, Priority, State
from aigw_server.queue.times import from_datetime, to_datetime

Doc = dict[str, Any]

INLINE_PAYLOAD_BYTES = 256 * 1024
EXPIRY_SLACK_SECONDS = 2 * 86_400


class _Scoped(Protocol):
    @property
    def subject(self) -> str: ...

    @property
    def client_id(self) -> str: ...


def idem_scope(job: _Scoped) -> str:
    """Whose idempotency keys a job's belongs to: its authenticated subject acting for its client id.

    Two users allowed the same X-Client-ID never share keys: a repeat by another owner is a new request.
    """
    return f"{job.subject}\x1e{job.client_id}"


def idem_key(scope: str, key: str) -> str:
    """The stored idempotency key: unique per owner (see `idem_scope`)."""
    return f"{scope}\x1f{key}"


def job_document(rec: JobRecord, retention_seconds: float) -> Doc:
    """The job as written at Submit (with its first grant when it was granted at once)."""
    doc: Doc = {
        "_id": rec.request_id,
        "model": rec.model,
        "kind": int(rec.kind),
        "priority": int(rec.priority),
        "seq": rec.seq,
        "submitted_at": to_datetime(rec.submitted_at),
        "deadline": to_datetime(rec.deadline),
        "max_attempts": rec.max_attempts,
        "client_id": rec.client_id,
        "subject": rec.subject,
        "owner_id": rec.owner_id,
        "expires_at": to_datetime(rec.submitted_at + retention_seconds + EXPIRY_SLACK_SECONDS),
    }
    if rec.idempotency_key:
        doc["idempotency_key"] = rec.idempotency_key
        doc["idem"] = idem_key(idem_scope(rec), rec.idempotency_key)
    if rec.payload_apart:
        doc["payload_apart"] = True
    else:
        doc["payload"] = Binary(rec.payload)
    if rec.lease is not None:
        lease = rec.lease
        doc["grant"] = {"lease_id": lease.lease_id, "worker_id": lease.worker_id, "at": to_datetime(lease.granted_at)}
    return doc


def payload_document(rec: JobRecord, retention_seconds: float) -> Doc:
    return {
        "_id": rec.request_id,
        "payload": Binary(rec.payload),
        "expires_at": to_datetime(rec.submitted_at + retention_seconds + EXPIRY_SLACK_SECONDS),
    }


def record_from_document(doc: Doc) -> JobRecord:
    """A job as submitted (no attempts yet); the payload only when the document carries it."""
    submitted = from_datetime(doc["submitted_at"])
    return JobRecord(
        request_id=doc["_id"],
        model=doc["model"],
        kind=Kind(doc["kind"]),
        priority=Priority(doc["priority"]),
        seq=int(doc["seq"]),
        submitted_at=submitted,
        deadline=from_datetime(doc["deadline"]),
        max_attempts=int(doc["max_attempts"]),
        client_id=doc.get("client_id", ""),
        subject=doc.get("subject", ""),
        idempotency_key=doc.get("idempotency_key", ""),
        owner_id=doc.get("owner_id", ""),
        payload=bytes(doc.get("payload", b"")),
        payload_apart=bool(doc.get("payload_apart", False)),
        queued_since=submitted,
    )


def inline_grant(doc: Doc) -> Grant | None:
    """The grant written with the job at Submit, if any (grant number 1)."""
    grant = doc.get("grant")
    if not grant:
        return None
    return Grant(1, grant["lease_id"], grant.get("worker_id", ""), 1, from_datetime(grant["at"]))


def grant_document(request_id: str, grant: Grant) -> Doc:
    return {
        "_id": f"{request_id}/g{grant.grant}",
        "rid": request_id,
        "t": "g",
        "n": grant.grant,
        "lease_id": grant.lease_id,
        "worker_id": grant.worker_id,
        "attempt": grant.attempt,
        "at": to_datetime(grant.at),
    }


def end_document(request_id: str, end: GrantEnd) -> Doc:
    doc: Doc = {
        "_id": f"{request_id}/e{end.grant}",
        "rid": request_id,
        "t": "e",
        "n": end.grant,
        "reason": end.reason,
        "counted": end.counted,
        "note": end.note,
        "at": to_datetime(end.at),
    }
    if end.error is not None:
        doc["error"] = error_document(end.error)
    return doc


def cancel_document(request_id: str, by: str, at: float) -> Doc:
    return {"_id": f"{request_id}/x", "rid": request_id, "t": "x", "by": by, "at": to_datetime(at)}


def grant_from_document(doc: Doc) -> Grant:
    return Grant(int(doc["n"]), doc["lease_id"], doc.get("worker_id", ""), int(doc["attempt"]), from_datetime(doc["at"]))


def end_from_document(doc: Doc) -> GrantEnd:
    error = error_from_document(doc["error"]) if doc.get("error") else None
    return GrantEnd(int(doc["n"]), doc["reason"], bool(doc["counted"]), error, from_datetime(doc["at"]), doc.get("note", ""))


def split_events(docs: list[Doc]) -> tuple[list[Grant], list[GrantEnd], bool]:
    """One job's stored events: its grants, their ends, and whether cancellation was asked for."""
    grants = [grant_from_document(d) for d in docs if d.get("t") == "g"]
    ends = [end_from_document(d) for d in docs if d.get("t") == "e"]
    return grants, ends, any(d.get("t") == "x" for d in docs)


def error_document(error: JobError) -> Doc:
    return {
        "code": error.code,
        "message": error.message,
        "attempt": error.attempt,
        "backend": error.backend,
        "at": to_datetime(error.at),
    }


def error_from_document(doc: Doc) -> JobError:
    return JobError(
        doc["code"], doc.get("message", ""), int(doc.get("attempt", 0)), doc.get("backend", ""), from_datetime(doc.get("at"))
    )


def outcome_document(rec: JobRecord, outcome: Outcome, now: float) -> Doc:
    """The outcome, with the job's listing fields and timings, so history reads need no other document."""
    queued_ms = rec.queued_ms(now) if rec.state == State.QUEUED else rec.queued_before * 1000.0
    service_ms = max(0.0, now - rec.started_at) * 1000.0 if rec.state == State.RUNNING else rec.ran_for * 1000.0
    doc: Doc = {
        "_id": rec.request_id,
        "state": int(outcome.state),
        "model": rec.model,
        "kind": int(rec.kind),
        "priority": int(rec.priority),
        "client_id": rec.client_id,
        "subject": rec.subject,
        "idempotency_key": rec.idempotency_key,
        "submitted_at": to_datetime(rec.submitted_at),
        "deadline": to_datetime(rec.deadline),
        "started_at": to_datetime(rec.started_at) if rec.started_at else None,
        "finished_at": to_datetime(outcome.at),
        "queued_ms": round(queued_ms, 3),
        "service_ms": round(service_ms, 3),
        "attempt": rec.attempt,
        "max_attempts": rec.max_attempts,
        "attempt_errors": [error_document(e) for e in outcome.attempt_errors],
        "backend": outcome.backend or rec.backend,
        "progress": rec.progress,
        "cancel_requested": rec.cancel_requested,
        "lease_id": outcome.lease_id,
        "result": Binary(outcome.result) if outcome.result else None,
    }
    if outcome.error is not None:
        doc["error"] = error_document(outcome.error)
    return doc


def finished_record(doc: Doc) -> JobRecord:
    """A finished job as its outcome document describes it (no payload)."""
    submitted = from_datetime(doc["submitted_at"])
    finished = from_datetime(doc["finished_at"])
    started = from_datetime(doc.get("started_at"))
    rec = JobRecord(
        request_id=doc["_id"],
        model=doc["model"],
        kind=Kind(doc["kind"]),
        priority=Priority(doc["priority"]),
        seq=0,
        submitted_at=submitted,
        deadline=from_datetime(doc["deadline"]),
        max_attempts=int(doc["max_attempts"]),
        client_id=doc.get("client_id", ""),
        subject=doc.get("subject", ""),
        idempotency_key=doc.get("idempotency_key", ""),
        state=State(doc["state"]),
        attempt=int(doc.get("attempt", 0)),
        attempt_errors=[error_from_document(e) for e in doc.get("attempt_errors", [])],
        error=error_from_document(doc["error"]) if doc.get("error") else None,
        result=bytes(doc["result"]) if doc.get("result") else b"",
        backend=doc.get("backend", ""),
        progress=int(doc.get("progress", 0)),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        started_at=started,
        finished_at=finished,
        finished_lease=doc.get("lease_id", ""),
        queued_before=float(doc.get("queued_ms", 0.0)) / 1000.0,
        ran_for=float(doc.get("service_ms", 0.0)) / 1000.0,
    )
    return rec
