"""OpenAI chat-completions JSON: every accepted shape, every refusal naming its field, answers the SDK can read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aigw_server.router.chat import Message
from aigw_server.router.openai_compat import DONE, ChunkWriter, Usage, completion_body, parse_completion_request
from aigw_server.runtime.errors import InvalidArgument


def parse(**body: Any) -> Any:
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    base.update(body)
    return parse_completion_request(orjson.dumps(base))


def test_full_request_maps_every_supported_field() -> None:
    req = parse(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there"}], "name": "bob"},
            {"role": "assistant", "content": None},
        ],
        max_tokens=5,
        max_completion_tokens=7,
        temperature=0,
        top_p=0.5,
        stop="END",
        seed=42,
        presence_penalty=0.1,
        frequency_penalty=-0.2,
        n=1,
        stream=True,
        stream_options={"include_usage": True},
        user="u-1",
        tools=[],
    )
    assert req.chat.messages == (Message("system", "be brief"), Message("user", "Hello, there", "bob"), Message("assistant", ""))
    p = req.chat.params
    assert (p.max_tokens, p.temperature, p.top_p, p.stop, p.seed) == (7, 0.0, 0.5, ("END",), 42)
    assert (p.presence_penalty, p.frequency_penalty) == (pytest.approx(0.1), pytest.approx(-0.2))
    assert (req.stream, req.include_usage, req.user) == (True, True, "u-1")


def test_minimal_request_leaves_everything_unset() -> None:
    req = parse(stop=["a", "b"])
    assert req.chat.model == "m"
    assert req.chat.params.max_tokens is None
    assert req.chat.params.stop == ("a", "b")
    assert (req.stream, req.include_usage) == (False, False)


def test_usage_is_only_asked_for_streams() -> None:
    assert not parse(stream_options={"include_usage": True}).include_usage


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (orjson.dumps({"model": "m"}), "messages"),
        (orjson.dumps({"messages": "hi"}), "messages"),
        (orjson.dumps({"messages": [3]}), "messages[0]"),
        (orjson.dumps({"messages": [{"content": "x"}]}), "messages[0].role"),
        (orjson.dumps({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
        (orjson.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), "messages[0].content[0].type"),
        (orjson.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}), "messages[0].content[0].text"),
        (orjson.dumps({"messages": [], "max_tokens": "10"}), "max_tokens"),
        (orjson.dumps({"messages": [], "max_tokens": True}), "max_tokens"),
        (orjson.dumps({"messages": [], "temperature": "hot"}), "temperature"),
        (orjson.dumps({"messages": [], "stop": [1]}), "stop"),
        (orjson.dumps({"messages": [], "stream": "yes"}), "stream"),
        (orjson.dumps({"messages": [], "stream_options": {"include_usage": 1}}), "stream_options.include_usage"),
        (orjson.dumps({"messages": [], "model": 7}), "model"),
        (orjson.dumps({"messages": [], "n": 2}), "n"),
    ],
)
def test_malformed_bodies_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_completion_request(raw)
    assert info.value.field == field
    assert info.value.message.startswith(field)


def test_n_other_than_one_is_refused_clearly() -> None:
    with pytest.raises(InvalidArgument, match="only 1 choice per request is supported, got 3"):
        parse(n=3)


def test_answer_is_read_by_the_openai_sdk() -> None:
    body = completion_body("abc", 1700000000, "m", "Hello!", "length", Usage(3, 2, 5))
    answer = ChatCompletion.model_validate_json(body)
    assert answer.id == "chatcmpl-abc"
    assert answer.choices[0].message.content == "Hello!"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 5


def test_chunks_are_read_by_the_openai_sdk() -> None:
    writer = ChunkWriter("abc", 1700000000, "m")
    events = [writer.role(), writer.delta("Hel"), writer.delta("lo"), writer.finish("stop"), writer.usage(Usage(1, 2, 3))]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in [*events, DONE])
    chunks = [ChatCompletionChunk.model_validate_json(e[len(b"data: ") :]) for e in events]
    assert {c.id for c in chunks} == {"chatcmpl-abc"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Hello"
    assert chunks[3].choices[0].finish_reason == "stop"
    assert chunks[4].choices == []
    assert chunks[4].usage is not None
    assert chunks[4].usage.completion_tokens == 2
