"""Request bodies sent upstream (priority mapping, sampling parameters) and results read back."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.common.v1 import common_pb2
from aigw_server.engines.payloads import chat_body, chat_result, chunk_parts
from aigw_server.runtime.errors import InvalidArgument, Unavailable
from aigw_server.textgen.settings import ModelSpec

SPEC = ModelSpec("llama", "/models/llama", "meta-llama/Llama-3-8B-Instruct", default_max_tokens=128)


def job(**params: Any) -> common_pb2.ChatJob:
    return common_pb2.ChatJob(
        messages=[
            common_pb2.ChatMessage(role="system", content="Be brief."),
            common_pb2.ChatMessage(role="user", content="Hi", name="alice"),
        ],
        params=common_pb2.GenerationParams(**params),
    )


def test_unary_body_maps_every_sampling_parameter() -> None:
    body = chat_body(
        SPEC,
        job(max_tokens=7, temperature=0.5, top_p=0.9, stop=["\n\n", "END"], seed=42, presence_penalty=0.25, frequency_penalty=-1),
        stream=False,
    )

    assert body == {
        "model": "meta-llama/Llama-3-8B-Instruct",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "alice"}],
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": pytest.approx(0.9),
        "stop": ["\n\n", "END"],
        "seed": 42,
        "presence_penalty": 0.25,
        "frequency_penalty": -1.0,
    }


def test_unset_parameters_are_left_to_the_server_but_max_tokens_defaults_per_model() -> None:
    body = chat_body(SPEC, job(), stream=False)

    assert body["max_tokens"] == 128
    assert not {"temperature", "top_p", "stop", "seed", "priority", "stream"} & set(body)
    assert chat_body(SPEC, job(temperature=0), stream=False)["temperature"] == 0


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        (common_pb2.PRIORITY_HIGH, -1),
        (common_pb2.PRIORITY_LOW, 1),
        (common_pb2.PRIORITY_NORMAL, None),
        (common_pb2.PRIORITY_UNSPECIFIED, None),
    ],
)
def test_priority_maps_to_vllm_where_lower_runs_first(priority: int, expected: int | None) -> None:
    with_policy = chat_body(SPEC, job(), stream=False, priority=priority, priority_scheduling=True)
    without = chat_body(SPEC, job(), stream=False, priority=priority, priority_scheduling=False)

    assert with_policy.get("priority") == expected
    assert "priority" not in without


def test_stream_body_asks_for_usage_where_the_server_understands_it() -> None:
    assert chat_body(SPEC, job(), stream=True)["stream_options"] == {"include_usage": True}
    assert chat_body(SPEC, job(), stream=True)["stream"] is True
    assert "stream_options" not in chat_body(SPEC, job(), stream=True, stream_usage=False)


@pytest.mark.parametrize(
    ("chat", "field"),
    [
        (common_pb2.ChatJob(), "chat.messages"),
        (common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="wizard", content="x")]), "chat.messages[0].role"),
        (job(max_tokens=0), "chat.params.max_tokens"),
        (job(temperature=2.5), "chat.params.temperature"),
        (job(temperature=float("nan")), "chat.params.temperature"),
        (job(top_p=0), "chat.params.top_p"),
        (job(presence_penalty=-3), "chat.params.presence_penalty"),
        (job(frequency_penalty=2.5), "chat.params.frequency_penalty"),
    ],
)
def test_bad_input_names_the_field(chat: common_pb2.ChatJob, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        chat_body(SPEC, chat, stream=False)
    assert err.value.field == field


def test_a_unary_answer_becomes_our_result_under_our_model_name() -> None:
    answer = {
        "model": "meta-llama/Llama-3-8B-Instruct",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }

    result = chat_result(answer, "llama")

    assert (result.model, result.message.role, result.message.content, result.finish_reason) == (
        "llama",
        "assistant",
        "Hello.",
        "stop",
    )
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (9, 3, 12)


def test_an_answer_without_choices_is_the_servers_fault() -> None:
    with pytest.raises(Unavailable):
        chat_result({"choices": []}, "llama")


def test_stream_chunks_give_their_delta_and_finish_reason() -> None:
    assert chunk_parts({"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}) == ("", "")
    assert chunk_parts({"choices": [{"delta": {"content": "Hel"}}]}) == ("Hel", "")
    assert chunk_parts({"choices": [{"delta": {"content": "."}, "finish_reason": "length"}]}) == (".", "length")
    assert chunk_parts({"choices": [], "usage": {"completion_tokens": 3}}) == ("", "")
