"""The API's words for its enums (priorities, OCR resolutions, backend states), derived once from
the proto enums: a value added to a proto enum gets its word here without a second list to keep in step.

A word is the value's name without its type prefix, in lower case (`PRIORITY_HIGH` → "high",
`RESOLUTION_GUNDAM` → "gundam").
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import EnumDescriptor

from aigw.common.v1 import common_pb2


def words(enum: EnumDescriptor, prefix: str) -> dict[str, str]:
    """{word: value name} for every value of `enum` but its UNSPECIFIED one, in the enum's order."""
    return {v.name.removeprefix(prefix).lower(): v.name for v in enum.values if v.number}


def _inverse(by_word: Mapping[str, int]) -> dict[int, str]:
    return {value: word for word, value in by_word.items()}


_ENUMS = common_pb2.DESCRIPTOR.enum_types_by_name

# Highest first: the order callers read and the CLI offers them.
PRIORITY_BY_WORD: dict[str, common_pb2.Priority.ValueType] = dict(
    sorted(
        ((w, common_pb2.Priority.Value(n)) for w, n in words(_ENUMS["Priority"], "PRIORITY_").items()),
        key=lambda item: -item[1],
    )
)
PRIORITY_WORDS: dict[int, str] = _inverse(PRIORITY_BY_WORD)
PRIORITIES: tuple[str, ...] = tuple(PRIORITY_BY_WORD)

# Smallest first.
RESOLUTION_BY_WORD: dict[str, common_pb2.Resolution.ValueType] = {
    w: common_pb2.Resolution.Value(n) for w, n in words(_ENUMS["Resolution"], "RESOLUTION_").items()
}
RESOLUTION_WORDS: dict[int, str] = _inverse(RESOLUTION_BY_WORD)
RESOLUTIONS: tuple[str, ...] = tuple(RESOLUTION_BY_WORD)

BACKEND_STATE_BY_WORD: dict[str, common_pb2.BackendState.ValueType] = {
    w: common_pb2.BackendState.Value(n) for w, n in words(_ENUMS["BackendState"], "BACKEND_STATE_").items()
}
BACKEND_STATE_WORDS: dict[int, str] = _inverse(BACKEND_STATE_BY_WORD)
