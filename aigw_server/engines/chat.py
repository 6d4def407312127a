"""One chat completion on an OpenAI-compatible engine: the request body, the call, our result.

Both callers of an engine use it: textgen's Generate/StreamGenerate RPCs and the router's worker,
which calls the engine directly (docs/router.md, "Direct engine calls").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from aigw.common.v1 import common_pb2
from aigw_server.engines.openai_http import EngineClient
from aigw_server.engines.payloads import chat_body, chat_result, chunk_parts, usage_of
from aigw_server.runtime.errors import Unavailable

StreamPart = tuple[str, str, common_pb2.Usage | None]
"""(delta, "", None) per text chunk, then ("", finish_reason, usage) once."""


@dataclass(frozen=True)
class ChatTarget:
    """One gateway model on one engine, and how that engine wants its requests."""

    model: str
    upstream_name: str
    default_max_tokens: int
    priority_scheduling: bool
    stream_usage: bool


def request_body(target: ChatTarget, chat: common_pb2.ChatJob, priority: int, stream: bool) -> dict[str, object]:
    """The /v1/chat/completions body; InvalidArgument (before any call) for bad input."""
    return chat_body(
        target,
        chat,
        stream=stream,
        priority=priority,
        priority_scheduling=target.priority_scheduling,
        stream_usage=target.stream_usage,
    )


async def complete(client: EngineClient, target: ChatTarget, body: dict[str, object], request_id: str) -> common_pb2.ChatResult:
    """One whole answer."""
    data = await client.chat(body, {"x-request-id": request_id}, target.upstream_name, target.model)
    return chat_result(data, target.model)


async def stream(
    client: EngineClient, target: ChatTarget, body: dict[str, object], request_id: str
) -> AsyncGenerator[StreamPart, None]:
    """The answer as it is generated; UNAVAILABLE when the stream ends before a finish reason."""
    finish, usage = "", None
    # Closed here, not when collected: leaving this stream early closes the engine's connection at once.
    async with aclosing(client.stream_chat(body, {"x-request-id": request_id}, target.upstream_name, target.model)) as events:
        async for event in events:
            delta, reason = chunk_parts(event)
            finish = reason or finish
            usage = usage_of(event) or usage
            if delta:
                yield delta, "", None
    if not finish:
        raise Unavailable("the model server ended the stream before the answer was finished")
    yield "", finish, usage
