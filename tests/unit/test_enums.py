"""The API's enum words come from the proto enums: every value but UNSPECIFIED has one, and back again."""

from __future__ import annotations

from aigw.common.v1 import common_pb2
from aigw_server.runtime import enums


def test_every_priority_has_a_word_highest_first() -> None:
    assert enums.PRIORITIES == ("high", "normal", "low")
    assert enums.PRIORITY_BY_WORD["high"] == common_pb2.PRIORITY_HIGH
    assert enums.PRIORITY_WORDS[common_pb2.PRIORITY_LOW] == "low"
    assert len(enums.PRIORITIES) == len(common_pb2.Priority.keys()) - 1


def test_resolutions_smallest_first_and_backend_states_in_lower_case() -> None:
    assert enums.RESOLUTIONS == ("tiny", "small", "base", "large", "gundam")
    assert enums.RESOLUTION_BY_WORD["gundam"] == common_pb2.RESOLUTION_GUNDAM
    assert enums.BACKEND_STATE_BY_WORD["sleeping"] == common_pb2.BACKEND_STATE_SLEEPING
