"""Dynamic config changes are refused with INVALID_ARGUMENT naming the field when out of range or not for the model's kind."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin.model_config import check_change
from aigw_server.runtime.errors import InvalidArgument


def patch(**fields: Any) -> queue_pb2.ModelConfigPatch:
    return queue_pb2.ModelConfigPatch(**fields)


def params(**fields: Any) -> queue_pb2.ModelConfigPatch:
    return patch(default_params=common_pb2.GenerationParams(**fields))


@pytest.mark.parametrize(
    "change",
    [
        patch(max_concurrent=1),
        patch(max_concurrent=1000, max_waiting=0, timeout_seconds=1, max_attempts=10),
        patch(max_waiting=100_000, timeout_seconds=86_400, max_attempts=1),
        patch(enabled=False),
        params(max_tokens=64, temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2, stop=["\n\n"], seed=7),
        params(temperature=2, top_p=0.01),
    ],
)
def test_valid_chat_changes_pass(change: queue_pb2.ModelConfigPatch) -> None:
    check_change("chat", 3, change)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (patch(max_concurrent=0), "patch.max_concurrent"),
        (patch(max_concurrent=1001), "patch.max_concurrent"),
        (patch(max_waiting=-1), "patch.max_waiting"),
        (patch(max_waiting=100_001), "patch.max_waiting"),
        (patch(timeout_seconds=0.5), "patch.timeout_seconds"),
        (patch(timeout_seconds=float("nan")), "patch.timeout_seconds"),
        (patch(timeout_seconds=86_401), "patch.timeout_seconds"),
        (patch(max_attempts=0), "patch.max_attempts"),
        (patch(max_attempts=11), "patch.max_attempts"),
        (params(max_tokens=0), "patch.default_params.max_tokens"),
        (params(temperature=2.5), "patch.default_params.temperature"),
        (params(temperature=-0.1), "patch.default_params.temperature"),
        (params(top_p=0), "patch.default_params.top_p"),
        (params(top_p=1.5), "patch.default_params.top_p"),
        (params(presence_penalty=-3), "patch.default_params.presence_penalty"),
        (params(frequency_penalty=2.5), "patch.default_params.frequency_penalty"),
        (params(stop=[""]), "patch.default_params.stop"),
        (params(stop=["x"] * 17), "patch.default_params.stop"),
        (patch(default_resolution=common_pb2.RESOLUTION_BASE), "patch.default_resolution"),
        (patch(), "patch"),
    ],
)
def test_bad_chat_changes_name_the_field(change: queue_pb2.ModelConfigPatch, field: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        check_change("chat", 1, change)
    assert bad.value.field == field
    assert bad.value.message.startswith(field)


def test_ranges_are_described() -> None:
    with pytest.raises(InvalidArgument, match=r"patch.max_waiting: -1 is outside \[0, 100000\]"):
        check_change("chat", 1, patch(max_waiting=-1))
    with pytest.raises(InvalidArgument, match=r"top_p: 0 is outside \(0, 1\]"):
        check_change("chat", 1, params(top_p=0))


def test_ocr_models_take_a_resolution_but_no_generation_parameters() -> None:
    check_change("ocr", 1, patch(default_resolution=common_pb2.RESOLUTION_GUNDAM, max_concurrent=2))
    with pytest.raises(InvalidArgument) as bad:
        check_change("ocr", 1, params(temperature=1))
    assert bad.value.field == "patch.default_params"
    with pytest.raises(InvalidArgument) as unknown:
        check_change("ocr", 1, patch(default_resolution=99))
    assert unknown.value.field == "patch.default_resolution"


def test_negative_expected_version_is_refused() -> None:
    with pytest.raises(InvalidArgument) as bad:
        check_change("chat", -1, patch(max_waiting=2))
    assert bad.value.field == "expected_version"
