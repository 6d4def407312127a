"""OpenAI chat-completion bodies from our chat jobs, and our results from the server's answers.

One place for both callers of an engine: textgen's Generate RPCs and the router's direct calls.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from aigw.common.v1 import common_pb2
from aigw_server.runtime.errors import InvalidArgument, Unavailable


class ModelSpec(Protocol):
    """How one server names a gateway model and the max_tokens it applies when a request sets none."""

    @property
    def upstream_name(self) -> str: ...

    @property
    def default_max_tokens(self) -> int: ...


ROLES = frozenset({"system", "user", "assistant", "tool"})

# vLLM schedules LOWER values first (default 0). NORMAL is left out of the body so that it also
# works on a server without `--scheduling-policy priority`.
VLLM_PRIORITY: dict[int, int] = {common_pb2.PRIORITY_HIGH: -1, common_pb2.PRIORITY_LOW: 1}


def _range(value: float, low: float, high: float, name: str, *, open_low: bool = False) -> float:
    below = value <= low if open_low else value < low
    if math.isnan(value) or below or value > high:
        bracket = "(" if open_low else "["
        raise InvalidArgument(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}", field=f"chat.params.{name}")
    return value


def _messages(chat: common_pb2.ChatJob) -> list[dict[str, str]]:
    if not chat.messages:
        raise InvalidArgument("the conversation has no messages", field="chat.messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(chat.messages):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"role must be one of {', '.join(sorted(ROLES))}, got {m.role!r}", field=f"chat.messages[{i}].role"
            )
        item = {"role": m.role, "content": m.content}
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def _sampling(params: common_pb2.GenerationParams, spec: ModelSpec, body: dict[str, Any]) -> None:
    max_tokens = params.max_tokens if params.HasField("max_tokens") else spec.default_max_tokens
    if max_tokens < 1:
        raise InvalidArgument(f"max_tokens must be >= 1, got {max_tokens}", field="chat.params.max_tokens")
    body["max_tokens"] = max_tokens
    if params.HasField("temperature"):
        body["temperature"] = _range(params.temperature, 0.0, 2.0, "temperature")
    if params.HasField("top_p"):
        body["top_p"] = _range(params.top_p, 0.0, 1.0, "top_p", open_low=True)
    if params.HasField("presence_penalty"):
        body["presence_penalty"] = _range(params.presence_penalty, -2.0, 2.0, "presence_penalty")
    if params.HasField("frequency_penalty"):
        body["frequency_penalty"] = _range(params.frequency_penalty, -2.0, 2.0, "frequency_penalty")
    if params.HasField("seed"):
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)


def chat_body(
    spec: ModelSpec,
    chat: common_pb2.ChatJob,
    *,
    stream: bool,
    priority: int = common_pb2.PRIORITY_UNSPECIFIED,
    priority_scheduling: bool = False,
    stream_usage: bool = True,
) -> dict[str, Any]:
    """The /v1/chat/completions body; raises InvalidArgument (changing nothing) for bad input."""
    body: dict[str, Any] = {"model": spec.upstream_name, "messages": _messages(chat)}
    _sampling(chat.params, spec, body)
    if priority_scheduling and priority in VLLM_PRIORITY:
        body["priority"] = VLLM_PRIORITY[priority]
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def usage_of(data: Any) -> common_pb2.Usage | None:
    """Token counts of an answer or chunk, if it carries them."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or prompt + completion)
    return common_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def chat_result(data: Any, model: str) -> common_pb2.ChatResult:
    """Our result from a unary chat completion; a malformed answer is the server's fault (UNAVAILABLE)."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        finish_reason = choice.get("finish_reason") or "stop"
    except (KeyError, IndexError, TypeError, AttributeError):
        raise Unavailable("the model server sent an answer without a choice") from None
    return common_pb2.ChatResult(
        message=common_pb2.ChatMessage(role="assistant", content=content),
        finish_reason=finish_reason,
        usage=usage_of(data),
        model=model,
    )


def chunk_parts(event: Any) -> tuple[str, str]:
    """The text delta and finish reason of one streamed chunk ("" where absent)."""
    choices = event.get("choices") if isinstance(event, dict) else None
    if not choices:
        return "", ""
    choice = choices[0]
    delta = choice.get("delta") or {}
    return delta.get("content") or "", choice.get("finish_reason") or ""
