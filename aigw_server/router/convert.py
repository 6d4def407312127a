"""Proto ⇄ domain conversions of the router: requests in, jobs out."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message as ProtoMessage

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2
from aigw_server.router.catalog import DynamicModel, SamplingParams
from aigw_server.router.chat import ChatInput, ChatSpec, Message
from aigw_server.router.ocr_input import OcrInput, OcrSpec, split_languages
from aigw_server.router.openai_compat import Usage
from aigw_server.runtime.enums import RESOLUTION_BY_WORD, RESOLUTION_WORDS

FORMATS = {"text": common_pb2.OCR_OUTPUT_FORMAT_TEXT, "markdown": common_pb2.OCR_OUTPUT_FORMAT_MARKDOWN}
WATCH_EVENTS = {
    queue_pb2.WATCH_EVENT_POSITION: "position",
    queue_pb2.WATCH_EVENT_GRANTED: "granted",
    queue_pb2.WATCH_EVENT_PROGRESS: "progress",
    queue_pb2.WATCH_EVENT_REQUEUED: "requeued",
    queue_pb2.WATCH_EVENT_FINISHED: "finished",
}

OPTIONAL_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
CHAT_REQUEST_PARAMS = ("max_tokens", "temperature", "top_p", "seed")

ChatLike = router_pb2.ChatRequest | router_pb2.StreamChatRequest
OcrLike = router_pb2.OcrRequest | router_pb2.StreamOcrRequest


def _optional_fields(message: ProtoMessage, names: tuple[str, ...]) -> dict[str, Any]:
    """The named optional fields of a message, None where unset (Any: fields of several types, passed on by name)."""
    return {name: getattr(message, name) if message.HasField(name) else None for name in names}


def chat_input(request: ChatLike) -> ChatInput:
    """The domain view of a Chat or StreamChat request."""
    params = SamplingParams(stop=tuple(request.stop), **_optional_fields(request, CHAT_REQUEST_PARAMS))
    messages = tuple(Message(m.role, m.content, m.name) for m in request.messages)
    return ChatInput(request.model, messages, params, request.prompt)


def ocr_input(request: OcrLike) -> OcrInput:
    """The domain view of an Ocr or StreamOcr request's fields (the upload is parsed separately)."""
    return OcrInput(
        document=request.document,
        model=request.model,
        resolution=request.resolution,
        languages=split_languages(request.languages),
        first_page=request.first_page,
        last_page=request.last_page,
        output_format=request.output_format,
        include_layout=request.include_layout,
        priority=request.priority,
        async_mode=isinstance(request, router_pb2.OcrRequest) and request.async_mode,
        idempotency_key=request.idempotency_key,
        timeout_seconds=request.timeout_seconds,
    )


def params_proto(params: SamplingParams) -> common_pb2.GenerationParams:
    proto = common_pb2.GenerationParams(stop=params.stop)
    for name in OPTIONAL_PARAMS:
        value = getattr(params, name)
        if value is not None:
            setattr(proto, name, value)
    return proto


def params_of(proto: common_pb2.GenerationParams) -> SamplingParams:
    return SamplingParams(stop=tuple(proto.stop), **_optional_fields(proto, OPTIONAL_PARAMS))


def chat_job(spec: ChatSpec) -> common_pb2.ChatJob:
    messages = [common_pb2.ChatMessage(role=m.role, content=m.content, name=m.name) for m in spec.messages]
    return common_pb2.ChatJob(messages=messages, params=params_proto(spec.params))


def ocr_job(spec: OcrSpec) -> common_pb2.OcrJob:
    return common_pb2.OcrJob(
        document=spec.document,
        resolution=RESOLUTION_BY_WORD[spec.resolution],
        languages=spec.languages,
        first_page=spec.first_page,
        last_page=spec.last_page,
        output_format=FORMATS[spec.output_format],
        include_layout=spec.include_layout,
    )


def dynamic_model(config: queue_pb2.ModelConfig) -> DynamicModel:
    """The router's view of a model's dynamic config from ModelConfigService."""
    return DynamicModel(
        enabled=config.enabled,
        version=config.version,
        timeout_seconds=config.timeout_seconds,
        default_params=params_of(config.default_params),
        default_resolution=RESOLUTION_WORDS.get(config.default_resolution, ""),
        updated_at=config.updated_at.ToNanoseconds() / 1e9 if config.HasField("updated_at") else 0.0,
    )


def usage_of(job: common_pb2.Job) -> Usage:
    u = job.chat_result.usage
    return Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)


def chat_response(job: common_pb2.Job) -> router_pb2.ChatResponse:
    """The answer of Chat: the result when finished, the state and position while queued."""
    reply = router_pb2.ChatResponse(request_id=job.request_id, status=job.state, model=job.model, position=job.position)
    reply.timings.CopyFrom(job.timings)
    if job.HasField("chat_result"):
        result = job.chat_result
        reply.response = result.message.content
        reply.message.CopyFrom(result.message)
        reply.finish_reason = result.finish_reason
        reply.usage.CopyFrom(result.usage)
    return reply


def ocr_response(job: common_pb2.Job) -> router_pb2.OcrResponse:
    """The answer of Ocr: the result when finished, the state and position while queued."""
    reply = router_pb2.OcrResponse(request_id=job.request_id, status=job.state, position=job.position)
    reply.timings.CopyFrom(job.timings)
    if job.HasField("ocr_result"):
        reply.text = job.ocr_result.text
        reply.result.CopyFrom(job.ocr_result)
    return reply
