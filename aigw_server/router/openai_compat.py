"""OpenAI's chat-completions JSON: parsing requests field by field, and writing answers and SSE chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aigw_server.router.catalog import SamplingParams
from aigw_server.router.chat import ChatInput, Message
from aigw_server.runtime.errors import InvalidArgument

ROLE_ALIASES = {"developer": "system"}
DONE = b"data: [DONE]\n\n"
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"

JsonObject = dict[str, Any]
"""A parsed JSON object (orjson answers Any): its values are checked field by field before use."""


@dataclass(frozen=True)
class CompletionRequest:
    """What an OpenAI chat-completions body asks for."""

    chat: ChatInput
    stream: bool = False
    include_usage: bool = False
    user: str = ""


@dataclass(frozen=True)
class Usage:
    """Token counts of an answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def _type_error(name: str, expected: str, value: object) -> InvalidArgument:
    got = "null" if value is None else type(value).__name__
    return InvalidArgument(f"{name}: expected {expected}, got {got}", field=name)


def _opt_int(body: JsonObject, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    return value


def _opt_number(body: JsonObject, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(name, "a number", value)
    return float(value)


def _opt_bool(body: JsonObject, name: str, where: str = "") -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(where or name, "true or false", value)
    return value


def _opt_str(body: JsonObject, name: str, where: str = "") -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(where or name, "a string", value)
    return value


def _stop(body: JsonObject) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _type_error("stop", "a string or a list of strings", value)


def _content(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _type_error(where, "a string or a list of text parts", value)
    texts = []
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _type_error(at, "an object", part)
        if part.get("type") != "text":
            raise InvalidArgument(
                f"{at}.type: only text parts are supported, got {str(part.get('type'))[:32]!r}", field=f"{at}.type"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _type_error(f"{at}.text", "a string", text)
        texts.append(text)
    return "".join(texts)


def _messages(body: JsonObject) -> tuple[Message, ...]:
    value = body.get("messages")
    if not isinstance(value, list):
        raise _type_error("messages", "a list of messages", value)
    messages = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _type_error(where, "an object", item)
        role = _opt_str(item, "role", f"{where}.role")
        if not role:
            raise InvalidArgument(f"{where}.role: required", field=f"{where}.role")
        content = _content(item.get("content"), f"{where}.content")
        messages.append(Message(ROLE_ALIASES.get(role, role), content, _opt_str(item, "name", f"{where}.name")))
    return tuple(messages)


def _stream_options(body: JsonObject) -> bool:
    value = body.get("stream_options")
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _type_error("stream_options", "an object", value)
    return _opt_bool(value, "include_usage", "stream_options.include_usage")


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Parses an OpenAI chat-completions body; INVALID_ARGUMENT names the offending field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"body: malformed JSON ({exc.msg} at position {exc.pos})", field="body") from None
    if not isinstance(body, dict):
        raise _type_error("body", "a JSON object", body)
    n = _opt_int(body, "n")
    if n is not None and n != 1:
        raise InvalidArgument(f"n: only 1 choice per request is supported, got {n}", field="n")
    max_tokens = _opt_int(body, "max_completion_tokens")
    params = SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else _opt_int(body, "max_tokens"),
        temperature=_opt_number(body, "temperature"),
        top_p=_opt_number(body, "top_p"),
        stop=_stop(body),
        seed=_opt_int(body, "seed"),
        presence_penalty=_opt_number(body, "presence_penalty"),
        frequency_penalty=_opt_number(body, "frequency_penalty"),
    )
    chat = ChatInput(model=_opt_str(body, "model"), messages=_messages(body), params=params)
    stream = _opt_bool(body, "stream")
    return CompletionRequest(chat, stream, _stream_options(body) and stream, _opt_str(body, "user"))


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def completion_body(request_id: str, created: int, model: str, content: str, finish_reason: str, usage: Usage) -> bytes:
    """The non-streaming answer (object "chat.completion")."""
    return orjson.dumps(
        {
            "id": completion_id(request_id),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason or "stop"}
            ],
            "usage": usage.as_json(),
        }
    )


class ChunkWriter:
    """Writes the SSE events of one streamed answer: role first, then deltas, the finish, usage, [DONE]."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self.head = {"id": completion_id(request_id), "object": "chat.completion.chunk", "created": created, "model": model}

    def _event(self, data: JsonObject) -> bytes:
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def _choice(self, delta: dict[str, str], finish_reason: str | None) -> bytes:
        return self._event({**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""}, None)

    def delta(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self, finish_reason: str) -> bytes:
        return self._choice({}, finish_reason or "stop")

    def usage(self, usage: Usage) -> bytes:
        return self._event({**self.head, "choices": [], "usage": usage.as_json()})


def async_accepted_body(request_id: str, status: str) -> bytes:
    """The answer to an OpenAI request sent with `Prefer: respond-async`."""
    return orjson.dumps(
        {"id": completion_id(request_id), "object": "chat.completion.request", "request_id": request_id, "status": status}
    )
