"""Human-readable text of the client's results (tables and key: value blocks), as the `aigw` CLI prints them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from aigw_client.enums import backend_state_name, crash_kind_name, resolution_name, state_name
from aigw_client.values import ChatDelta, ChatResult, OcrResult, RequestEvent, RequestInfo, Usage


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str = "(none)") -> str:
    """Left-aligned columns separated by two spaces; `empty` under the header when there are no rows."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [list(headers), *cells]]
    return "\n".join(lines if cells else [*lines, empty])


def pairs(items: Iterable[tuple[str, object]]) -> str:
    """`key: value` lines with aligned values, skipping empty values."""
    kept = [(k, str(v)) for k, v in items if v not in ("", None)]
    width = max((len(k) for k, _ in kept), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in kept)


def when(ts: timestamp_pb2.Timestamp) -> str:
    """UTC time of a Timestamp, "" when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def usage(u: Usage | None) -> str:
    return f"{u.prompt_tokens} prompt + {u.completion_tokens} completion tokens" if u else ""


def chat_summary(r: ChatResult | ChatDelta) -> str:
    """One line about a chat's id, model, tokens and finish reason (for stderr)."""
    tokens = usage(r.usage)
    parts = [f"request {r.request_id}", r.model, tokens, r.finish_reason, r.status if r.status != "SUCCEEDED" else ""]
    return " · ".join(p for p in parts if p)


def submitted(request_id: str, status: str, position: int) -> str:
    """What an async submit says besides the id (for stderr)."""
    where = f" at position {position}" if position else ""
    return f"{status or 'submitted'}{where}; follow it with: aigw requests watch {request_id}"


def ocr_summary(r: OcrResult) -> str:
    parts = [f"request {r.request_id}", r.model, r.engine, r.document_type, f"{len(r.pages)} of {r.page_count} pages"]
    return " · ".join(p for p in parts if p)


def page_header(page: common_pb2.OcrPage, page_count: int) -> str:
    of = f" of {page_count}" if page_count else ""
    detail = ", ".join(p for p in (page.language, page.source, f"confidence {page.confidence:.0f}") if p)
    return f"=== page {page.page}{of} ({detail}) ==="


def request_info(r: RequestInfo) -> str:
    """The block `aigw requests get` prints; the result's text follows it when there is one."""
    attempts = f"{r.attempt} of {r.max_attempts}" if r.max_attempts else ""
    error = f"{r.error_code}: {r.error_message}" if r.error_code else ""
    head = pairs(
        [
            ("request", r.request_id),
            ("state", r.state),
            ("model", r.model),
            ("kind", r.kind),
            ("priority", r.priority),
            ("client", r.client_id),
            ("position", r.position or ""),
            ("attempt", attempts),
            ("backend", r.backend),
            ("progress", r.progress or ""),
            ("error", error),
            ("usage", usage(r.result.usage) if isinstance(r.result, ChatResult) else ""),
        ]
    )
    text = r.result.text if r.result is not None else ""
    return f"{head}\n\n{text}" if text else head


def request_event(e: RequestEvent) -> str:
    """One line per watched event."""
    r = e.request
    detail = {
        "QUEUED": f"position {r.position}" if r.position else "",
        "RUNNING": " ".join(
            p for p in (f"on {r.backend}" if r.backend else "", f"progress {r.progress}" if r.progress else "") if p
        ),
        "FAILED": f"{r.error_code}: {r.error_message}",
        "CANCELLED": r.error_message,
    }.get(r.state, "")
    return "  ".join(p for p in (e.event, r.state, detail) if p)


def models(reply: admin_pb2.ListModelsResponse) -> str:
    model_rows = [
        (
            m.model,
            m.kind,
            "yes" if m.enabled else "no",
            m.state,
            ",".join(m.loaded_on) or "-",
            m.queue.processing,
            m.queue.waiting,
        )
        for m in reply.models
    ]
    backend_rows = [
        (
            b.status.backend,
            b.kind,
            backend_state_name(b.status.state),
            b.health,
            ",".join(b.status.loaded_models) or "-",
            f"{b.status.in_flight}/{b.status.capacity}",
            b.address,
        )
        for b in reply.backends
    ]
    models_table = table(("MODEL", "KIND", "ENABLED", "STATE", "LOADED ON", "RUNNING", "WAITING"), model_rows, "(no models)")
    backends_table = table(
        ("BACKEND", "KIND", "STATE", "HEALTH", "LOADED", "IN FLIGHT", "ADDRESS"), backend_rows, "(no backends)"
    )
    return f"{models_table}\n\n{backends_table}"


def _percentiles(p: admin_pb2.Percentiles) -> str:
    return f"p50 {p.p50:.1f} · p90 {p.p90:.1f} · p99 {p.p99:.1f} ms ({p.count} samples)" if p.count else ""


def queue_stats(s: admin_pb2.GetQueueStatsResponse) -> str:
    failures = ", ".join(f"{k} {v:.0f}" for k, v in sorted(s.failures_by_reason.items()))
    return pairs(
        [
            ("model", s.model),
            ("processing", f"{s.processing} of {s.max_concurrent}"),
            ("waiting", f"{s.waiting} of {s.max_waiting}"),
            ("utilization", f"{s.utilization:.0%}"),
            ("total_processed", f"{s.total_processed:.0f}"),
            ("total_failed", f"{s.total_failed:.0f}"),
            ("total_cancelled", f"{s.total_cancelled:.0f}"),
            ("failures", failures),
            ("queue wait", _percentiles(s.queue_wait_ms)),
            ("service time", _percentiles(s.service_ms)),
        ]
    )


def queue_series(s: admin_pb2.GetQueueSeriesResponse) -> str:
    rows = [
        (
            datetime.fromtimestamp(m.start.seconds, UTC).strftime("%H:%M"),
            f"{m.finished_per_minute:.1f}",
            m.succeeded,
            m.failed,
            m.cancelled,
            f"{m.total_ms.p50:.0f}/{m.total_ms.p95:.0f}/{m.total_ms.p99:.0f}" if m.total_ms.count else "-",
            f"{m.queue_wait_ms.p50:.0f}/{m.queue_wait_ms.p95:.0f}/{m.queue_wait_ms.p99:.0f}" if m.queue_wait_ms.count else "-",
            m.peak_running,
            m.peak_waiting,
        )
        for m in s.minutes
    ]
    headers = ["minute", "per min", "ok", "failed", "cancelled", "total p50/95/99 ms", "wait p50/95/99 ms", "running", "waiting"]
    return f"{s.model}, minutes of {s.bucket_seconds} s (UTC)\n" + table(headers, rows)


def crashes(reply: admin_pb2.ListCrashesResponse) -> str:
    rows = [
        (
            when(e.at),
            crash_kind_name(e.kind),
            e.service,
            e.model or "-",
            e.request_id or "-",
            e.message,
        )
        for e in reply.events
    ]
    return table(("TIME", "KIND", "SERVICE", "MODEL", "REQUEST", "MESSAGE"), rows, "(no crashes)")


def history(reply: admin_pb2.ListRequestsResponse) -> str:
    rows = [
        (j.request_id, state_name(j.state), j.model, j.client_id, when(j.timings.submitted_at), j.error.message or "-")
        for j in reply.requests
    ]
    return table(("REQUEST", "STATE", "MODEL", "CLIENT", "SUBMITTED", "ERROR"), rows, "(no requests)")


def _value(v: object) -> str:
    """A config value as typed: floats without float32 noise, lists comma-separated."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, Iterable) and not isinstance(v, str):
        return ",".join(str(x) for x in v)
    return str(v)


def model_config(c: admin_pb2.ModelConfig) -> str:
    p = c.default_params
    params = [(f"default_params.{f.name}", _value(v)) for f, v in p.ListFields()]
    return pairs(
        [
            ("model", c.model),
            ("version", c.version),
            ("enabled", str(c.enabled).lower()),
            ("max_concurrent", c.max_concurrent),
            ("max_waiting", c.max_waiting),
            ("timeout_seconds", f"{c.timeout_seconds:g}"),
            ("max_attempts", c.max_attempts),
            ("default_resolution", resolution_name(c.default_resolution)),
            *params,
            ("updated", " by ".join(x for x in (when(c.updated_at), c.updated_by) if x)),
        ]
    )


def users(items: Sequence[admin_pb2.UserInfo]) -> str:
    rows = [
        (u.username, u.role, "yes" if u.disabled else "no", ",".join(u.allowed_client_ids) or "-", when(u.created_at))
        for u in items
    ]
    return table(("USERNAME", "ROLE", "DISABLED", "CLIENT IDS", "CREATED"), rows, "(no users)")


def api_keys(items: Sequence[admin_pb2.ApiKeyInfo]) -> str:
    rows = [
        (k.key_id, k.subject, k.role, k.name or "-", when(k.created_at), when(k.last_used_at) or "-", when(k.revoked_at) or "-")
        for k in items
    ]
    return table(("KEY ID", "SUBJECT", "ROLE", "NAME", "CREATED", "LAST USED", "REVOKED"), rows, "(no keys)")


def autoswitch(a: admin_pb2.GetAutoSwitchResponse) -> str:
    head = f"auto-switch: {'on' if a.enabled else 'off'} (window {a.window_days} days, cooldown {a.cooldown_seconds:g} s)"
    demand = table(
        ("MODEL", "EXPECTED/H", "QUEUED", "SCORE"),
        [(d.model, f"{d.expected:.1f}", d.queued, f"{d.score:.2f}") for d in a.demand],
        "(no demand data)",
    )
    plan = table(
        ("BACKEND", "HOLDS", "SHOULD HOLD", "WHY"),
        [(p.backend, p.current_model or "-", p.target_model or "-", p.reason) for p in a.plan],
        "(no switchable backends)",
    )
    decisions = table(
        ("TIME", "BACKEND", "ACTION", "FROM", "TO", "WHY"),
        [(when(d.at), d.backend, d.action, d.from_model or "-", d.to_model or "-", d.reason) for d in a.decisions],
        "(no decisions yet)",
    )
    return f"{head}\n\n{demand}\n\n{plan}\n\n{decisions}"


def health(h: router_pb2.GetHealthResponse) -> str:
    head = f"{h.status} (version {h.version})" if h.version else h.status
    return "\n".join([head, *(f"  {k}: {v}" for k, v in sorted(h.components.items()))])
