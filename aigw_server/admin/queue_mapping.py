"""Explicit mapping between the queue service's (internal) messages and the admin API's own, field by field.

admin.proto defines every message it carries; the queue's look-alikes stay internal. Each function here copies
one message into the other kind, keeping presence (optional scalars, timestamps, sub-messages) as it was, so an
operator sees exactly what the queue stored and the queue gets exactly what the operator sent. The crash kind
enums are checked to agree, name and number, when this module is imported.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from aigw.admin.v1 import admin_pb2
from aigw.queue.v1 import queue_pb2


def _check_crash_kinds() -> None:
    """The two CrashKind enums must agree name for name and number for number, so a kind maps by its number."""
    queue_kinds = {name: int(number) for name, number in queue_pb2.CrashKind.items()}
    admin_kinds = {name: int(number) for name, number in admin_pb2.CrashKind.items()}
    if queue_kinds != admin_kinds:
        differ = sorted(set(queue_kinds.items()) ^ set(admin_kinds.items()))
        raise ImportError(f"admin CrashKind and queue CrashKind differ: {differ}")


_check_crash_kinds()


def crash_kind_to_queue(kind: admin_pb2.CrashKind.ValueType) -> queue_pb2.CrashKind.ValueType:
    """An operator's crash kind filter as the queue's (a number it does not know passes through, as on the wire)."""
    return queue_pb2.CrashKind.ValueType(kind)


def crash_kind_to_admin(kind: queue_pb2.CrashKind.ValueType) -> admin_pb2.CrashKind.ValueType:
    """A stored event's crash kind as the admin API's."""
    return admin_pb2.CrashKind.ValueType(kind)


def _copy_time(source: timestamp_pb2.Timestamp, present: bool, target: timestamp_pb2.Timestamp) -> None:
    if present:
        target.CopyFrom(source)


def user_info(user: queue_pb2.User) -> admin_pb2.UserInfo:
    """A stored user as operators see it: never its password hash; `created_at` always shown."""
    return admin_pb2.UserInfo(
        username=user.username,
        role=user.role,
        disabled=user.disabled,
        allowed_client_ids=list(user.allowed_client_ids),
        created_at=user.created_at,
    )


def api_key_info(key: queue_pb2.ApiKey) -> admin_pb2.ApiKeyInfo:
    """A stored API key as operators see it: never its secret's hash; `created_at` always shown, the other times
    only when they happened."""
    info = admin_pb2.ApiKeyInfo(key_id=key.key_id, subject=key.subject, role=key.role, name=key.name, created_at=key.created_at)
    _copy_time(key.last_used_at, key.HasField("last_used_at"), info.last_used_at)
    _copy_time(key.revoked_at, key.HasField("revoked_at"), info.revoked_at)
    return info


def percentiles(source: queue_pb2.Percentiles) -> admin_pb2.Percentiles:
    """Latency percentiles of recent jobs."""
    return admin_pb2.Percentiles(p50=source.p50, p90=source.p90, p99=source.p99, count=source.count)


def queue_stats(stats: queue_pb2.GetQueueStatsResponse) -> admin_pb2.GetQueueStatsResponse:
    """A model's queue metrics."""
    reply = admin_pb2.GetQueueStatsResponse(
        model=stats.model,
        processing=stats.processing,
        waiting=stats.waiting,
        utilization=stats.utilization,
        total_processed=stats.total_processed,
        total_failed=stats.total_failed,
        total_cancelled=stats.total_cancelled,
        failures_by_reason=dict(stats.failures_by_reason),
        max_concurrent=stats.max_concurrent,
        max_waiting=stats.max_waiting,
    )
    if stats.HasField("queue_wait_ms"):
        reply.queue_wait_ms.CopyFrom(percentiles(stats.queue_wait_ms))
    if stats.HasField("service_ms"):
        reply.service_ms.CopyFrom(percentiles(stats.service_ms))
    return reply


def series_percentiles(source: queue_pb2.SeriesPercentiles) -> admin_pb2.SeriesPercentiles:
    """Latency percentiles of one minute."""
    return admin_pb2.SeriesPercentiles(p50=source.p50, p95=source.p95, p99=source.p99, count=source.count)


def queue_minute(minute: queue_pb2.QueueMinute) -> admin_pb2.QueueMinute:
    """One minute of a model's queue."""
    reply = admin_pb2.QueueMinute(
        seconds=minute.seconds,
        succeeded=minute.succeeded,
        failed=minute.failed,
        cancelled=minute.cancelled,
        deadline_exceeded=minute.deadline_exceeded,
        finished_per_minute=minute.finished_per_minute,
        peak_running=minute.peak_running,
        peak_waiting=minute.peak_waiting,
    )
    _copy_time(minute.start, minute.HasField("start"), reply.start)
    if minute.HasField("total_ms"):
        reply.total_ms.CopyFrom(series_percentiles(minute.total_ms))
    if minute.HasField("queue_wait_ms"):
        reply.queue_wait_ms.CopyFrom(series_percentiles(minute.queue_wait_ms))
    return reply


def queue_series(series: queue_pb2.GetQueueSeriesResponse) -> admin_pb2.GetQueueSeriesResponse:
    """A model's last minutes of queue."""
    return admin_pb2.GetQueueSeriesResponse(
        model=series.model, bucket_seconds=series.bucket_seconds, minutes=[queue_minute(m) for m in series.minutes]
    )


def crash_filter(request: admin_pb2.ListCrashesRequest) -> queue_pb2.ListCrashesRequest:
    """An operator's crash log query as the queue's."""
    query = queue_pb2.ListCrashesRequest(
        service=request.service,
        model=request.model,
        kind=crash_kind_to_queue(request.kind),
        page_size=request.page_size,
        page_token=request.page_token,
        request_id=request.request_id,
    )
    _copy_time(request.since, request.HasField("since"), query.since)
    _copy_time(request.until, request.HasField("until"), query.until)
    return query


def crash_event(event: queue_pb2.CrashEvent) -> admin_pb2.CrashEvent:
    """One abnormal event."""
    reply = admin_pb2.CrashEvent(
        id=event.id,
        kind=crash_kind_to_admin(event.kind),
        service=event.service,
        model=event.model,
        backend=event.backend,
        request_id=event.request_id,
        message=event.message,
        details=dict(event.details),
        log_tail=list(event.log_tail),
    )
    _copy_time(event.at, event.HasField("at"), reply.at)
    return reply


def crash_page(page: queue_pb2.ListCrashesResponse) -> admin_pb2.ListCrashesResponse:
    """A page of the crash log."""
    return admin_pb2.ListCrashesResponse(events=[crash_event(e) for e in page.events], next_page_token=page.next_page_token)


def history_filter(request: admin_pb2.ListRequestsRequest) -> queue_pb2.ListJobsRequest:
    """An operator's history query as the queue's: every submitter's jobs (no subject filter)."""
    query = queue_pb2.ListJobsRequest(
        model=request.model,
        state=request.state,
        client_id=request.client_id,
        page_size=request.page_size,
        page_token=request.page_token,
        kind=request.kind,
    )
    _copy_time(request.since, request.HasField("since"), query.since)
    _copy_time(request.until, request.HasField("until"), query.until)
    return query


def history_page(page: queue_pb2.ListJobsResponse) -> admin_pb2.ListRequestsResponse:
    """A page of the request history (the jobs are the shared common.v1 messages)."""
    return admin_pb2.ListRequestsResponse(requests=page.jobs, next_page_token=page.next_page_token)


def model_config(config: queue_pb2.ModelConfig) -> admin_pb2.ModelConfig:
    """A model's dynamic configuration."""
    reply = admin_pb2.ModelConfig(
        model=config.model,
        version=config.version,
        max_concurrent=config.max_concurrent,
        max_waiting=config.max_waiting,
        timeout_seconds=config.timeout_seconds,
        max_attempts=config.max_attempts,
        default_resolution=config.default_resolution,
        enabled=config.enabled,
        updated_by=config.updated_by,
    )
    if config.HasField("default_params"):
        reply.default_params.CopyFrom(config.default_params)
    _copy_time(config.updated_at, config.HasField("updated_at"), reply.updated_at)
    return reply


def model_config_patch(patch: admin_pb2.ModelConfigPatch) -> queue_pb2.ModelConfigPatch:
    """An operator's change to a model's configuration, unset fields left unset."""
    change = queue_pb2.ModelConfigPatch(default_resolution=patch.default_resolution)
    if patch.HasField("max_concurrent"):
        change.max_concurrent = patch.max_concurrent
    if patch.HasField("max_waiting"):
        change.max_waiting = patch.max_waiting
    if patch.HasField("timeout_seconds"):
        change.timeout_seconds = patch.timeout_seconds
    if patch.HasField("max_attempts"):
        change.max_attempts = patch.max_attempts
    if patch.HasField("enabled"):
        change.enabled = patch.enabled
    if patch.HasField("default_params"):
        change.default_params.CopyFrom(patch.default_params)
    return change


def switch_decision(decision: queue_pb2.SwitchDecision) -> admin_pb2.SwitchDecision:
    """One recorded decision of the auto-switcher."""
    reply = admin_pb2.SwitchDecision(
        id=decision.id,
        backend=decision.backend,
        from_model=decision.from_model,
        to_model=decision.to_model,
        action=decision.action,
        reason=decision.reason,
        scores=dict(decision.scores),
    )
    _copy_time(decision.at, decision.HasField("at"), reply.at)
    return reply
