"""Server-sent event decoding as OpenAI-compatible servers stream chat chunks."""

from __future__ import annotations

from aigw_server.engines.sse import SseDecoder


def decode(lines: list[str]) -> list[str]:
    decoder = SseDecoder()
    events = [data for line in lines if (data := decoder.feed(line)) is not None]
    tail = decoder.flush()
    return [*events, tail] if tail is not None else events


def test_one_event_per_blank_line() -> None:
    lines = ['data: {"a":1}', "", 'data: {"b":2}', "", "data: [DONE]", ""]

    assert decode(lines) == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_multi_line_data_is_joined_and_other_fields_ignored() -> None:
    lines = [": keep-alive", "event: message", "id: 7", "retry: 1000", "data: first", "data:second", "", "", ""]

    assert decode(lines) == ["first\nsecond"]


def test_only_one_leading_space_is_dropped() -> None:
    assert decode(["data:  indented", ""]) == [" indented"]


def test_an_event_the_stream_ends_without_a_blank_line_is_kept() -> None:
    assert decode(["data: a", "", "data: last"]) == ["a", "last"]
