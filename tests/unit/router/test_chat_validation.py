"""Chat requests: priorities, field ranges, roles, sizes, model resolution and the defaults applied."""

from __future__ import annotations

from typing import Any

import pytest

from aigw_server.router.catalog import DynamicModel, ModelCatalog, SamplingParams
from aigw_server.router.chat import MAX_CHAT_CHARS, ChatInput, Message, parse_priority, submission, validate_chat
from aigw_server.runtime.config import ModelConfig
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument, NotFound


def catalog() -> ModelCatalog:
    return ModelCatalog(
        {
            "ocr-a": ModelConfig(kind="ocr"),
            "chat-a": ModelConfig(default_max_tokens=64),
            "chat-off": ModelConfig(enabled=False),
            "chat-b": ModelConfig(default_max_tokens=32),
        }
    )


def chat(**over: Any) -> ChatInput:
    base: dict[str, Any] = {"model": "chat-a", "messages": (Message("user", "hi"),), "params": SamplingParams()}
    base.update(over)
    return ChatInput(**base)


@pytest.mark.parametrize(
    ("header", "field", "expected"),
    [("", "", "normal"), ("HIGH", "low", "high"), ("", "Low", "low"), (" normal ", "", "normal")],
)
def test_priority_header_wins_and_case_is_ignored(header: str, field: str, expected: str) -> None:
    assert parse_priority(header, field) == expected


@pytest.mark.parametrize(("header", "field", "source"), [("urgent", "", "x-priority"), ("", "1", "priority")])
def test_unknown_priority_is_invalid_argument(header: str, field: str, source: str) -> None:
    with pytest.raises(InvalidArgument, match=f"{source}: .* is not a priority") as info:
        parse_priority(header, field)
    assert info.value.field == "priority"


def test_model_defaults_fill_unset_parameters() -> None:
    spec = validate_chat(chat(params=SamplingParams(temperature=0.5)), catalog())
    assert spec.params.max_tokens == 64
    assert spec.params.temperature == 0.5
    assert spec.model.name == "chat-a"


def test_dynamic_config_defaults_apply_and_requests_still_win() -> None:
    cat = catalog()
    cat.update({"chat-a": DynamicModel(enabled=True, version=3, default_params=SamplingParams(max_tokens=10, top_p=0.9))})
    assert validate_chat(chat(), cat).params == SamplingParams(max_tokens=10, top_p=0.9)
    assert validate_chat(chat(params=SamplingParams(max_tokens=5)), cat).params.max_tokens == 5


def test_dynamic_config_can_disable_and_enable_a_model() -> None:
    cat = catalog()
    cat.update({"chat-a": DynamicModel(enabled=False)})
    with pytest.raises(FailedPrecondition, match="disabled"):
        validate_chat(chat(), cat)
    cat.update({"chat-off": DynamicModel(enabled=True)})
    assert validate_chat(chat(model="chat-off"), cat).model.name == "chat-off"


def test_empty_model_takes_the_first_enabled_chat_model() -> None:
    assert validate_chat(chat(model=""), catalog()).model.name == "chat-a"


def test_unknown_disabled_and_wrong_kind_models() -> None:
    with pytest.raises(NotFound, match="'nope' does not exist"):
        validate_chat(chat(model="nope"), catalog())
    with pytest.raises(FailedPrecondition, match="disabled"):
        validate_chat(chat(model="chat-off"), catalog())
    with pytest.raises(InvalidArgument, match="'ocr-a' is an OCR model, not a chat model"):
        validate_chat(chat(model="ocr-a"), catalog())


def test_prompt_is_a_single_user_message() -> None:
    spec = validate_chat(chat(messages=(), prompt="Hello"), catalog())
    assert spec.messages == (Message("user", "Hello"),)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"messages": ()}, "messages"),
        ({"messages": (), "prompt": "  "}, "messages"),
        ({"prompt": "also"}, "prompt"),
        ({"messages": (Message("wizard", "x"),)}, "messages[0].role"),
        ({"messages": (Message("user", ""), Message("system", " "))}, "messages"),
        ({"messages": (Message("user", "x" * (MAX_CHAT_CHARS + 1)),)}, "messages"),
        ({"params": SamplingParams(temperature=2.5)}, "temperature"),
        ({"params": SamplingParams(temperature=float("nan"))}, "temperature"),
        ({"params": SamplingParams(top_p=0.0)}, "top_p"),
        ({"params": SamplingParams(top_p=1.01)}, "top_p"),
        ({"params": SamplingParams(max_tokens=0)}, "max_tokens"),
        ({"params": SamplingParams(presence_penalty=-3)}, "presence_penalty"),
        ({"params": SamplingParams(stop=("a", "b", "c", "d", "e"))}, "stop"),
        ({"params": SamplingParams(stop=("",))}, "stop[0]"),
    ],
)
def test_bad_chat_input_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_chat(chat(**over), catalog())
    assert info.value.field == field
    assert field.split("[")[0] in info.value.message


@pytest.mark.parametrize(("key", "timeout", "field"), [("k" * 300, 0.0, "idempotency_key"), ("", -1.0, "timeout_seconds")])
def test_submission_fields_are_checked(key: str, timeout: float, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        submission("normal", False, key, timeout)
    assert info.value.field == field
