"""Proto messages to domain values and back (no logic beyond mapping and input shape checks)."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.queue.autoswitch import SwitchDecision, SwitchState
from aigw_server.queue.crashlog import CrashEvent, CrashFilter, CrashKind
from aigw_server.queue.identity import ApiKey, RefreshToken, User, UserChange
from aigw_server.queue.jobs import JobError, JobRecord, Kind, Lease, Priority, State
from aigw_server.queue.jobs_engine import JobResult, QueueStats, SubmitSpec
from aigw_server.queue.model_settings import ModelSettings, Patch
from aigw_server.queue.series import BUCKET_SECONDS, MinuteView, Quantiles
from aigw_server.queue.stats import percentiles
from aigw_server.queue.times import from_timestamp, set_timestamp, to_timestamp
from aigw_server.runtime.enums import PRIORITY_WORDS
from aigw_server.runtime.errors import InvalidArgument


def priority(value: int) -> Priority:
    """A request's priority (unset: NORMAL); InvalidArgument for a number the enum does not have."""
    if value == common_pb2.PRIORITY_UNSPECIFIED:
        return Priority.NORMAL
    if value not in PRIORITY_WORDS:
        raise InvalidArgument(f"priority: {value} is not a priority", field="priority")
    return Priority(value)


def optional_seconds(message: Message, name: str) -> float:
    """The time in a Timestamp field, 0 when unset."""
    if not message.HasField(name):
        return 0.0
    value: Timestamp = getattr(message, name)
    return from_timestamp(value)


def submit_spec(req: queue_pb2.SubmitRequest) -> SubmitSpec:
    """A Submit request as the engine takes it; the payload is serialized once here."""
    which = req.WhichOneof("payload")
    kind = Kind.CHAT if which == "chat" else Kind.OCR if which == "ocr" else None
    payload = req.chat.SerializeToString() if which == "chat" else req.ocr.SerializeToString() if which == "ocr" else b""
    return SubmitSpec(
        model=req.model,
        kind=kind,
        payload=payload,
        priority=priority(req.priority),
        request_id=req.request_id,
        client_id=req.client_id,
        subject=req.subject,
        idempotency_key=req.idempotency_key,
        timeout_seconds=req.timeout_seconds if req.timeout_seconds == req.timeout_seconds else -1.0,
        owner_id=req.owner_id,
        accept_lease=req.accept_lease,
    )


def error_proto(e: JobError) -> common_pb2.JobError:
    out = common_pb2.JobError(code=e.code, message=e.message, attempt=e.attempt, backend=e.backend)
    if e.at:
        out.at.CopyFrom(to_timestamp(e.at))
    return out


def error_from_proto(e: common_pb2.JobError) -> JobError:
    return JobError(e.code, e.message, e.attempt, e.backend, optional_seconds(e, "at"))


def job_proto(rec: JobRecord, position: int, now: float, include_payload: bool = False) -> common_pb2.Job:
    """The job as clients see it; the request body only when asked for, the result once SUCCEEDED."""
    job = common_pb2.Job(
        request_id=rec.request_id,
        model=rec.model,
        kind=common_pb2.JobKind.ValueType(rec.kind),
        priority=common_pb2.Priority.ValueType(rec.priority),
        state=common_pb2.JobState.ValueType(rec.state),
        client_id=rec.client_id,
        subject=rec.subject,
        idempotency_key=rec.idempotency_key,
        attempt=rec.attempt,
        max_attempts=rec.max_attempts,
        position=position,
        backend=rec.backend,
        progress=rec.progress,
        cancel_requested=rec.cancel_requested,
    )
    if rec.attempt_errors:
        job.attempt_errors.extend(error_proto(e) for e in rec.attempt_errors)
    if rec.error is not None:
        job.error.CopyFrom(error_proto(rec.error))
    timings = job.timings
    set_timestamp(timings.submitted_at, rec.submitted_at)
    set_timestamp(timings.deadline, rec.deadline)
    if rec.started_at:
        set_timestamp(timings.started_at, rec.started_at)
    if rec.finished_at:
        set_timestamp(timings.finished_at, rec.finished_at)
    timings.queued_ms = rec.queued_ms(now)
    timings.service_ms = rec.service_ms(now)
    if include_payload and rec.payload:
        (job.chat if rec.kind == Kind.CHAT else job.ocr).ParseFromString(rec.payload)
    if rec.result and rec.state == State.SUCCEEDED:
        (job.chat_result if rec.kind == Kind.CHAT else job.ocr_result).ParseFromString(rec.result)
    return job


def lease_proto(rec: JobRecord, lease: Lease, ttl: float) -> queue_pb2.Lease:
    return queue_pb2.Lease(
        lease_id=lease.lease_id,
        request_id=rec.request_id,
        attempt=lease.attempt,
        expires_at=to_timestamp(lease.expires_at),
        ttl_ms=int(ttl * 1000),
    )


def job_result(req: queue_pb2.CompleteJobRequest) -> JobResult:
    """The result and the kind of job it answers (None when the request carries none)."""
    which = req.WhichOneof("result")
    if which == "chat_result":
        return JobResult(Kind.CHAT, req.chat_result.SerializeToString())
    if which == "ocr_result":
        return JobResult(Kind.OCR, req.ocr_result.SerializeToString())
    return JobResult(None, b"")


def stats_proto(model: str, s: QueueStats) -> queue_pb2.GetQueueStatsResponse:
    st = s.stats
    waits, services = percentiles(st.waits_ms), percentiles(st.services_ms)
    return queue_pb2.GetQueueStatsResponse(
        model=model,
        processing=s.processing,
        waiting=s.waiting,
        utilization=s.processing / s.settings.max_concurrent if s.settings.max_concurrent else 0.0,
        total_processed=st.succeeded,
        total_failed=st.failed,
        total_cancelled=st.cancelled,
        failures_by_reason=dict(st.failures),
        max_concurrent=s.settings.max_concurrent,
        max_waiting=s.settings.max_waiting,
        queue_wait_ms=queue_pb2.Percentiles(p50=waits.p50, p90=waits.p90, p99=waits.p99, count=waits.count),
        service_ms=queue_pb2.Percentiles(p50=services.p50, p90=services.p90, p99=services.p99, count=services.count),
    )


def _series_percentiles(q: Quantiles) -> queue_pb2.SeriesPercentiles:
    return queue_pb2.SeriesPercentiles(p50=q.p50, p95=q.p95, p99=q.p99, count=q.count)


def series_proto(model: str, minutes: list[MinuteView]) -> queue_pb2.GetQueueSeriesResponse:
    return queue_pb2.GetQueueSeriesResponse(
        model=model,
        bucket_seconds=BUCKET_SECONDS,
        minutes=[
            queue_pb2.QueueMinute(
                start=to_timestamp(m.start),
                seconds=m.seconds,
                succeeded=m.succeeded,
                failed=m.failed,
                cancelled=m.cancelled,
                deadline_exceeded=m.deadline_exceeded,
                finished_per_minute=m.per_minute,
                total_ms=_series_percentiles(m.total_ms),
                queue_wait_ms=_series_percentiles(m.wait_ms),
                peak_running=m.peak_running,
                peak_waiting=m.peak_waiting,
            )
            for m in minutes
        ],
    )


def settings_proto(s: ModelSettings) -> queue_pb2.ModelConfig:
    config = queue_pb2.ModelConfig(
        model=s.model,
        version=s.version,
        max_concurrent=s.max_concurrent,
        max_waiting=s.max_waiting,
        timeout_seconds=s.timeout_seconds,
        max_attempts=s.max_attempts,
        default_resolution=common_pb2.Resolution.ValueType(s.default_resolution),
        enabled=s.enabled,
        updated_by=s.updated_by,
    )
    if s.default_params:
        config.default_params.ParseFromString(s.default_params)
    if s.updated_at:
        config.updated_at.CopyFrom(to_timestamp(s.updated_at))
    return config


def patch_from_proto(p: queue_pb2.ModelConfigPatch) -> Patch:
    return Patch(
        max_concurrent=p.max_concurrent if p.HasField("max_concurrent") else None,
        max_waiting=p.max_waiting if p.HasField("max_waiting") else None,
        timeout_seconds=p.timeout_seconds if p.HasField("timeout_seconds") else None,
        max_attempts=p.max_attempts if p.HasField("max_attempts") else None,
        default_params=p.default_params.SerializeToString() if p.HasField("default_params") else None,
        default_resolution=int(p.default_resolution) or None,
        enabled=p.enabled if p.HasField("enabled") else None,
    )


def crash_from_proto(e: queue_pb2.CrashEvent) -> CrashEvent:
    if e.kind not in {int(k) for k in CrashKind}:
        raise InvalidArgument("event.kind: required, one of the CrashKind values", field="event.kind")
    return CrashEvent(
        kind=CrashKind(e.kind),
        message=e.message,
        service=e.service,
        model=e.model,
        backend=e.backend,
        request_id=e.request_id,
        details=dict(e.details),
        log_tail=tuple(e.log_tail),
        id=e.id,
        at=optional_seconds(e, "at"),
    )


def crash_proto(e: CrashEvent) -> queue_pb2.CrashEvent:
    return queue_pb2.CrashEvent(
        id=e.id,
        at=to_timestamp(e.at),
        kind=queue_pb2.CrashKind.ValueType(e.kind),
        service=e.service,
        model=e.model,
        backend=e.backend,
        request_id=e.request_id,
        message=e.message,
        details=e.details,
        log_tail=list(e.log_tail),
    )


def crash_filter(req: queue_pb2.ListCrashesRequest) -> CrashFilter:
    return CrashFilter(
        service=req.service,
        model=req.model,
        kind=int(req.kind),
        request_id=req.request_id,
        since=optional_seconds(req, "since"),
        until=optional_seconds(req, "until"),
    )


def user_from_proto(u: queue_pb2.User) -> User:
    return User(u.username, u.role or "user", u.password_hash, u.disabled, tuple(u.allowed_client_ids))


def user_proto(u: User) -> queue_pb2.User:
    return queue_pb2.User(
        username=u.username,
        role=u.role,
        # password_hash is write-only: no answer carries it (VerifyPassword checks passwords here).
        disabled=u.disabled,
        allowed_client_ids=list(u.allowed_client_ids),
        created_at=to_timestamp(u.created_at),
        updated_at=to_timestamp(u.updated_at),
    )


def user_change(req: queue_pb2.UpdateUserRequest) -> UserChange:
    return UserChange(
        username=req.username,
        role=req.role if req.HasField("role") else None,
        password_hash=req.password_hash if req.HasField("password_hash") else None,
        disabled=req.disabled if req.HasField("disabled") else None,
        allowed_client_ids=tuple(req.allowed_client_ids) if req.set_allowed_client_ids else None,
    )


def key_from_proto(k: queue_pb2.ApiKey) -> ApiKey:
    return ApiKey(k.key_id, k.secret_hash, k.subject, k.role or "user", k.name)


def key_proto(k: ApiKey) -> queue_pb2.ApiKey:
    """A key's record without its secret hash."""
    out = queue_pb2.ApiKey(key_id=k.key_id, subject=k.subject, role=k.role, name=k.name, created_at=to_timestamp(k.created_at))
    if k.last_used_at:
        out.last_used_at.CopyFrom(to_timestamp(k.last_used_at))
    if k.revoked_at:
        out.revoked_at.CopyFrom(to_timestamp(k.revoked_at))
    return out


def token_from_proto(t: queue_pb2.RefreshToken) -> RefreshToken:
    return RefreshToken(t.token_id, t.token_hash, t.subject, t.family_id, optional_seconds(t, "expires_at"))


def token_proto(t: RefreshToken) -> queue_pb2.RefreshToken:
    out = queue_pb2.RefreshToken(
        token_id=t.token_id,
        token_hash=t.token_hash,
        subject=t.subject,
        family_id=t.family_id,
        expires_at=to_timestamp(t.expires_at),
    )
    if t.used_at:
        out.used_at.CopyFrom(to_timestamp(t.used_at))
    if t.revoked_at:
        out.revoked_at.CopyFrom(to_timestamp(t.revoked_at))
    return out


def switch_state_proto(s: SwitchState) -> queue_pb2.GetAutoSwitchStateResponse:
    out = queue_pb2.GetAutoSwitchStateResponse(updated_by=s.updated_by)
    if s.enabled is not None:
        out.enabled = s.enabled
    if s.updated_at:
        out.updated_at.CopyFrom(to_timestamp(s.updated_at))
    return out


def decision_from_proto(d: queue_pb2.SwitchDecision) -> SwitchDecision:
    return SwitchDecision(
        backend=d.backend,
        action=d.action,
        from_model=d.from_model,
        to_model=d.to_model,
        reason=d.reason,
        scores=dict(d.scores),
        id=d.id,
        at=optional_seconds(d, "at"),
    )


def decision_proto(d: SwitchDecision) -> queue_pb2.SwitchDecision:
    return queue_pb2.SwitchDecision(
        id=d.id,
        at=to_timestamp(d.at),
        backend=d.backend,
        from_model=d.from_model,
        to_model=d.to_model,
        action=d.action,
        reason=d.reason,
        scores=d.scores,
    )
