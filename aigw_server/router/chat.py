"""Chat requests as the router accepts them: validation, limits, priorities and model defaults (no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aigw_server.router.catalog import ModelCatalog, ModelEntry, SamplingParams
from aigw_server.runtime.enums import PRIORITIES
from aigw_server.runtime.errors import InvalidArgument

PRIORITY_CHOICES = f"{', '.join(PRIORITIES[:-1])} or {PRIORITIES[-1]}"
ROLES = frozenset({"system", "user", "assistant", "tool"})

MAX_MESSAGES = 2048
MAX_CHAT_CHARS = 2_000_000
MAX_TOKENS_LIMIT = 131_072
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_NAME_CHARS = 64
MAX_KEY_CHARS = 256
MAX_TIMEOUT_SECONDS = 86_400.0


@dataclass(frozen=True)
class Message:
    """One message of a conversation."""

    role: str
    content: str
    name: str = ""


@dataclass(frozen=True)
class Submission:
    """What every inference request carries besides its body."""

    priority: str = "normal"
    """A word of `aigw_server.runtime.enums.PRIORITIES`."""
    async_mode: bool = False
    idempotency_key: str = ""
    timeout_seconds: float = 0.0


@dataclass(frozen=True)
class ChatInput:
    """A chat request as a client sent it (from ChatRequest or OpenAI's JSON), not yet validated."""

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams
    prompt: str = ""


@dataclass(frozen=True)
class ChatSpec:
    """A validated chat request with the model's defaults applied."""

    model: ModelEntry
    messages: tuple[Message, ...]
    params: SamplingParams


def parse_priority(header: str, field_value: str) -> str:
    """The request's priority: the x-priority header wins over the field; high|normal|low in any case."""
    raw = (header or field_value).strip().lower()
    if not raw:
        return "normal"
    for name in PRIORITIES:
        if raw == name:
            return name
    source = "x-priority" if header else "priority"
    raise InvalidArgument(f"{source}: {raw[:32]!r} is not a priority (use {PRIORITY_CHOICES})", field="priority")


def submission(priority: str, async_mode: bool, idempotency_key: str, timeout_seconds: float) -> Submission:
    """Validates the fields every inference request shares."""
    if len(idempotency_key) > MAX_KEY_CHARS:
        raise InvalidArgument(f"idempotency_key: at most {MAX_KEY_CHARS} characters", field="idempotency_key")
    if not math.isfinite(timeout_seconds) or not 0 <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidArgument(f"timeout_seconds: must be between 0 and {MAX_TIMEOUT_SECONDS:g}", field="timeout_seconds")
    return Submission(priority, async_mode, idempotency_key, timeout_seconds)


def refuse_stream_flag(stream: bool) -> None:
    """Chat answers in one piece; a client that asks it to stream is told where streams are."""
    if stream:
        raise InvalidArgument(
            "stream: /api/chat answers in one piece; for tokens as they are generated, POST the same body "
            'without "stream" to /api/chat/stream (gRPC: StreamChat)',
            field="stream",
        )


def _check_range(name: str, value: float | None, low: float, high: float, low_open: bool = False) -> None:
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise InvalidArgument(f"{name}: {value!r} is outside {bracket}{low:g}, {high:g}]", field=name)


def validate_params(params: SamplingParams) -> None:
    """Checks the ranges of sampling parameters (unset ones are not checked)."""
    if params.max_tokens is not None and not 1 <= params.max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidArgument(f"max_tokens: must be between 1 and {MAX_TOKENS_LIMIT}", field="max_tokens")
    _check_range("temperature", params.temperature, 0.0, 2.0)
    _check_range("top_p", params.top_p, 0.0, 1.0, low_open=True)
    _check_range("presence_penalty", params.presence_penalty, -2.0, 2.0)
    _check_range("frequency_penalty", params.frequency_penalty, -2.0, 2.0)
    if len(params.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(f"stop: at most {MAX_STOP_SEQUENCES} sequences", field="stop")
    for i, stop in enumerate(params.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidArgument(f"stop[{i}]: must have 1 to {MAX_STOP_CHARS} characters", field=f"stop[{i}]")
    if params.seed is not None and not -(2**63) <= params.seed < 2**63:
        raise InvalidArgument("seed: must fit in 64 bits", field="seed")


def conversation(messages: tuple[Message, ...], prompt: str) -> tuple[Message, ...]:
    """The messages to send: `messages`, or `prompt` as one user message; checks roles and sizes."""
    if messages and prompt:
        raise InvalidArgument("give either messages or prompt, not both", field="prompt")
    if not messages:
        if not prompt.strip():
            raise InvalidArgument("messages: at least one message (or a prompt) is required", field="messages")
        messages = (Message("user", prompt),)
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgument(f"messages: at most {MAX_MESSAGES} messages", field="messages")
    total = 0
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            roles = ", ".join(sorted(ROLES))
            raise InvalidArgument(f"messages[{i}].role: {message.role[:32]!r} is not one of {roles}", field=f"messages[{i}].role")
        if len(message.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"messages[{i}].name: at most {MAX_NAME_CHARS} characters", field=f"messages[{i}].name")
        total += len(message.content)
    if total > MAX_CHAT_CHARS:
        raise InvalidArgument(f"messages: {total} characters in all; the limit is {MAX_CHAT_CHARS}", field="messages")
    if not any(m.content.strip() for m in messages):
        raise InvalidArgument("messages: every message is empty", field="messages")
    return messages


def validate_chat(request: ChatInput, catalog: ModelCatalog) -> ChatSpec:
    """A ChatSpec, or INVALID_ARGUMENT naming the field; NOT_FOUND / FAILED_PRECONDITION for the model."""
    messages = conversation(request.messages, request.prompt)
    validate_params(request.params)
    model = catalog.resolve(request.model, "chat")
    return ChatSpec(model, messages, request.params.over(model.defaults))
