"""The API's words for its enums (priorities, OCR resolutions, job states, crash kinds, …), derived from the public
proto enums, so a value added to an enum gets its word without a second list to keep in step.

A word is the value's name without its type prefix, in lower case (`PRIORITY_HIGH` → "high",
`CRASH_KIND_LEASE_LOST` → "lease_lost"); job states have no prefix and keep their upper-case names
("SUCCEEDED"), as the gateway shows them. The client installs without the server, so this is its own module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2

if TYPE_CHECKING:
    # The generic wrapper exists in the protobuf stubs only; at run time every generated enum is an EnumTypeWrapper.
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)

PRIORITY_PREFIX = "PRIORITY_"
RESOLUTION_PREFIX = "RESOLUTION_"
BACKEND_STATE_PREFIX = "BACKEND_STATE_"
CRASH_KIND_PREFIX = "CRASH_KIND_"
JOB_KIND_PREFIX = "JOB_KIND_"


def words(enum: _EnumTypeWrapper[V], prefix: str = "", lower: bool = True) -> tuple[str, ...]:
    """The word of every value of `enum` but its unset (zero) one, in the enum's order."""
    return tuple(word(enum, number, prefix, lower) for _, number in enum.items() if number)


def word(enum: _EnumTypeWrapper[V], number: V, prefix: str = "", lower: bool = True) -> str:
    """The word of one value; "" for the unset (zero) value."""
    if not number:
        return ""
    name = enum.Name(number).removeprefix(prefix)
    return name.lower() if lower else name


def enum_value(enum: _EnumTypeWrapper[V], name: str, prefix: str, what: str) -> V:
    """A value from its word ("lease_lost") or full name ("CRASH_KIND_LEASE_LOST"); the unset value for ""."""
    values = dict(enum.items())
    if not name:
        return next(number for number in values.values() if not number)
    for candidate in (name.upper(), f"{prefix}{name.upper()}"):
        if candidate in values:
            return values[candidate]
    raise ValueError(f"{what}: {name!r} is not one of {', '.join(words(enum, prefix))}")


# Highest first: the order the CLI offers them.
PRIORITIES: tuple[str, ...] = tuple(reversed(words(common_pb2.Priority, PRIORITY_PREFIX)))
# Smallest first.
RESOLUTIONS: tuple[str, ...] = words(common_pb2.Resolution, RESOLUTION_PREFIX)
JOB_STATES: tuple[str, ...] = words(common_pb2.JobState, lower=False)
CRASH_KINDS: tuple[str, ...] = words(admin_pb2.CrashKind, CRASH_KIND_PREFIX)


def state_name(state: common_pb2.JobState.ValueType) -> str:
    """The state's name ("QUEUED", "RUNNING", …), or "" when unset."""
    return word(common_pb2.JobState, state, lower=False)


def priority_name(priority: common_pb2.Priority.ValueType) -> str:
    """The priority as "high", "normal" or "low", or "" when unset."""
    return word(common_pb2.Priority, priority, PRIORITY_PREFIX)


def resolution_name(resolution: common_pb2.Resolution.ValueType) -> str:
    """The OCR resolution mode ("tiny" … "gundam"), or "" when unset."""
    return word(common_pb2.Resolution, resolution, RESOLUTION_PREFIX)


def backend_state_name(state: common_pb2.BackendState.ValueType) -> str:
    """A backend's state in words ("ready", "loading", …), or "" when unset."""
    return word(common_pb2.BackendState, state, BACKEND_STATE_PREFIX)


def crash_kind_name(kind: admin_pb2.CrashKind.ValueType) -> str:
    """A crash event's kind in words ("lease_lost", …), or "" when unset."""
    return word(admin_pb2.CrashKind, kind, CRASH_KIND_PREFIX)
