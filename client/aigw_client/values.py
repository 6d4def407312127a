"""What the aigw client returns: results, stream events and tokens, built from the gateway's protos."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from aigw_client.enums import priority_name, state_name

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class Usage:
    """Token counts of a generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_proto(cls, usage: common_pb2.Usage) -> Usage:
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


@dataclass(frozen=True)
class ChatResult:
    """The answer to a chat (or, for an async submit, its id and status with an empty text)."""

    request_id: str
    status: str
    model: str = ""
    text: str = ""
    finish_reason: str = ""
    usage: Usage = Usage()
    position: int = 0
    raw: Message | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_response(cls, r: router_pb2.ChatResponse) -> ChatResult:
        text = r.response or r.message.content
        return cls(r.request_id, state_name(r.status), r.model, text, r.finish_reason, Usage.from_proto(r.usage), r.position, r)


@dataclass(frozen=True)
class ChatDelta:
    """One event of a streamed chat: text added, and on the last one the finish reason and usage."""

    request_id: str
    status: str
    delta: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    position: int = 0
    model: str = ""

    @classmethod
    def from_event(cls, e: router_pb2.StreamChatResponse) -> ChatDelta:
        usage = Usage.from_proto(e.usage) if e.HasField("usage") else None
        return cls(e.request_id, state_name(e.status), e.delta, e.finish_reason, usage, e.position, e.model)


@dataclass(frozen=True)
class OcrResult:
    """The recognised document: text of all pages, per-page results (`aigw.common.v1.OcrPage`) and metadata."""

    request_id: str
    status: str
    text: str = ""
    pages: tuple[common_pb2.OcrPage, ...] = ()
    document_type: str = ""
    page_count: int = 0
    engine: str = ""
    model: str = ""
    position: int = 0
    raw: Message | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_result(cls, request_id: str, status: str, r: common_pb2.OcrResult, position: int = 0) -> OcrResult:
        return cls(request_id, status, r.text, tuple(r.pages), r.document_type, r.page_count, r.engine, r.model, position, r)

    @classmethod
    def from_response(cls, r: router_pb2.OcrResponse) -> OcrResult:
        result = cls.from_result(r.request_id, state_name(r.status), r.result, r.position)
        return dataclasses.replace(result, text=r.text or result.text, raw=r)


@dataclass(frozen=True)
class OcrPageEvent:
    """One event of a streamed OCR: a finished page, or (before the first page) queue progress."""

    request_id: str
    status: str
    page: common_pb2.OcrPage | None = None
    page_count: int = 0
    position: int = 0

    @classmethod
    def from_event(cls, e: router_pb2.StreamOcrResponse) -> OcrPageEvent:
        page = e.page if e.HasField("page") else None
        return cls(e.request_id, state_name(e.status), page, e.page_count, e.position)


@dataclass(frozen=True)
class RequestInfo:
    """A request as the gateway keeps it: state, position, attempts, error and, once SUCCEEDED, the result."""

    request_id: str
    state: str
    model: str = ""
    kind: str = ""
    priority: str = ""
    position: int = 0
    attempt: int = 0
    max_attempts: int = 0
    backend: str = ""
    progress: int = 0
    client_id: str = ""
    error_code: str = ""
    error_message: str = ""
    result: ChatResult | OcrResult | None = None
    raw: Message | None = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the request reached SUCCEEDED, FAILED or CANCELLED."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_job(cls, job: common_pb2.Job) -> RequestInfo:
        kind = {common_pb2.JOB_KIND_CHAT: "chat", common_pb2.JOB_KIND_OCR: "ocr"}.get(job.kind, "")
        state = state_name(job.state)
        return cls(
            request_id=job.request_id,
            state=state,
            model=job.model,
            kind=kind,
            priority=priority_name(job.priority),
            position=job.position,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            backend=job.backend,
            progress=job.progress,
            client_id=job.client_id,
            error_code=job.error.code,
            error_message=job.error.message,
            result=_job_result(job, state),
            raw=job,
        )


def _job_result(job: common_pb2.Job, state: str) -> ChatResult | OcrResult | None:
    which = job.WhichOneof("result")
    if which == "chat_result":
        r = job.chat_result
        return ChatResult(
            job.request_id, state, r.model or job.model, r.message.content, r.finish_reason, Usage.from_proto(r.usage)
        )
    if which == "ocr_result":
        return OcrResult.from_result(job.request_id, state, job.ocr_result)
    return None


@dataclass(frozen=True)
class RequestEvent:
    """One event of a watched request: "position", "granted", "progress", "requeued" or "finished"."""

    event: str
    request: RequestInfo

    @classmethod
    def from_event(cls, e: router_pb2.WatchRequestResponse) -> RequestEvent:
        return cls(e.event, RequestInfo.from_job(e.request))


@dataclass(frozen=True)
class TokenInfo:
    """A login: the access token, the (single-use) refresh token and when each expires (Unix seconds)."""

    access_token: str
    refresh_token: str = ""
    expires_at: float = 0.0
    refresh_expires_at: float = 0.0
    role: str = ""
    username: str = ""

    @classmethod
    def from_response(cls, r: admin_pb2.IssueTokenResponse, username: str = "", now: float | None = None) -> TokenInfo:
        t = time.time() if now is None else now
        refresh_at = t + r.refresh_expires_in if r.refresh_expires_in else 0.0
        return cls(r.access_token, r.refresh_token, t + r.expires_in if r.expires_in else 0.0, refresh_at, r.role, username)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def to_jsonable(value: Any) -> Any:
    """Plain JSON data of a result: dataclasses and protos (snake_case field names) become dicts; `raw` is left out."""
    if isinstance(value, Message):
        return MessageToDict(value, preserving_proto_field_name=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "raw"}
        if isinstance(value, RequestInfo):
            out["done"] = value.done
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def openai_completion(result: ChatResult, created: int | None = None) -> dict[str, Any]:
    """The chat result in OpenAI's `chat.completion` shape (`id` is the gateway's request id)."""
    return {
        "id": result.request_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": result.model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason or None}
        ],
        "usage": dataclasses.asdict(result.usage),
    }


def openai_chunk(delta: ChatDelta, first: bool, created: int) -> dict[str, Any] | None:
    """A stream event in OpenAI's `chat.completion.chunk` shape; None for events with nothing to say (queue position)."""
    if not (delta.delta or delta.finish_reason or first):
        return None
    content: dict[str, str] = {"role": "assistant"} if first else {}
    if delta.delta:
        content["content"] = delta.delta
    chunk: dict[str, Any] = {
        "id": delta.request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": delta.model,
        "choices": [{"index": 0, "delta": content, "finish_reason": delta.finish_reason or None}],
    }
    if delta.usage is not None:
        chunk["usage"] = dataclasses.asdict(delta.usage)
    return chunk
