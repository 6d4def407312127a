"""JSON values checked against the request message before protobuf parses them, so refusals speak the API's terms.

protobuf's own parser names message types, lists a message's fields in lowerCamelCase and passes Python's
conversion errors through (`invalid literal for int() with base 10`). Checking first lets every refusal
name the field by its snake_case path (`messages[0].role`) and say what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import re

import orjson
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from aigw_server.edge.bindings import find_field

_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
FLOAT32_MAX = 3.4028234663852886e38
_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})
_INTEGER_TEXT = re.compile(r"-?\d+")
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_FREE_FORM = {"google.protobuf.Struct": dict, "google.protobuf.ListValue": list, "google.protobuf.Any": dict}
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


class FieldError(ValueError):
    """A JSON value that does not fit its field; the message starts with the field's path."""


def conform(obj: object, descriptor: Descriptor) -> dict[str, object]:
    """`obj` checked against `descriptor`, with enum values in their declared spelling; FieldError otherwise."""
    return _message(obj, descriptor, "")


def enum_value(enum: EnumDescriptor, raw: object, where: str) -> int | str:
    """An enum value by number, by declared name or by its short name (`large` for RESOLUTION_LARGE), in any case."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        if raw in enum.values_by_name:
            return raw
        wanted = raw.strip().upper()
        prefix = _enum_prefix(enum)
        for value in enum.values:
            if wanted in (value.name, value.name.removeprefix(prefix)):
                return value.name
        if _INTEGER_TEXT.fullmatch(raw):
            return int(raw)
    raise FieldError(f"{where} must be one of {', '.join(accepted_names(enum))}; got {_shown(raw)}")


def accepted_names(enum: EnumDescriptor) -> list[str]:
    """The values a client is told to send: short lowercase names, without the zero value."""
    prefix = _enum_prefix(enum)
    return [value.name.removeprefix(prefix).lower() for value in enum.values if value.number != 0]


def _enum_prefix(enum: EnumDescriptor) -> str:
    return _CAMEL_BOUNDARY.sub("_", enum.name).upper() + "_"


def _shown(value: object) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _message(obj: object, descriptor: Descriptor, where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise FieldError(f"{where or 'the body'} must be a JSON object; got {_shown(obj)}")
    out: dict[str, object] = {}
    for key, value in obj.items():
        field = find_field(descriptor, key)
        path = f"{where}.{key}" if where else key
        if field is None:
            raise FieldError(f'unknown field "{path}": this request has no such field')
        path = f"{where}.{field.name}" if where else field.name
        out[key] = _field(field, value, path)
    return out


def _field(field: FieldDescriptor, value: object, where: str) -> object:
    if value is None:
        return None
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise FieldError(f"{where} must be a JSON object; got {_shown(value)}")
        item = entry.fields_by_name["value"]
        return {k: _single(item, v, f"{where}.{k}") for k, v in value.items()}
    if field.is_repeated:
        if not isinstance(value, list):
            raise FieldError(f"{where} must be a list; got {_shown(value)}")
        return [_single(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return _single(field, value, where)


def _single(field: FieldDescriptor, value: object, where: str) -> object:
    if field.message_type is not None:
        return _message_value(field.message_type, value, where)
    if field.enum_type is not None:
        return enum_value(field.enum_type, value, where)
    kind = field.type
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise FieldError(f"{where} must be true or false; got {_shown(value)}")
    elif kind in _INTS:
        _integer(value, _INTS[kind], where)
    elif kind in _FLOATS:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or _is_number_text(value)):
            raise FieldError(f"{where} must be a number; got {_shown(value)}")
        if kind == FieldDescriptor.TYPE_FLOAT and isinstance(value, (int, float)) and abs(value) > FLOAT32_MAX:
            raise FieldError(f"{where} must be a number between -3.4e38 and 3.4e38; got {_shown(value)}")
    elif kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise FieldError(f"{where} must be a string; got {_shown(value)}")
    elif kind == FieldDescriptor.TYPE_BYTES and not _is_base64(value):
        raise FieldError(f"{where} must be base64-encoded bytes")
    return value


def _integer(value: object, bounds: tuple[int, int], where: str) -> None:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (isinstance(value, str) and _INTEGER_TEXT.fullmatch(value)):
        number = int(value)
    if number is None:
        raise FieldError(f"{where} must be an integer; got {_shown(value)}")
    low, high = bounds
    if not low <= number <= high:
        raise FieldError(f"{where} must be an integer from {low} to {high}; got {number}")


def _is_number_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value in _SPECIAL_FLOATS:
        return True
    try:
        float(value)
    except ValueError:
        return False
    return value.strip() == value and value.lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _message_value(descriptor: Descriptor, value: object, where: str) -> object:
    name = descriptor.full_name
    if name in _WRAPPERS:
        return _single(descriptor.fields_by_name["value"], value, where)
    if name == "google.protobuf.Timestamp":
        _well_known(timestamp_pb2.Timestamp(), value, where, "an RFC 3339 time such as 2026-01-31T09:30:00Z")
        return value
    if name == "google.protobuf.Duration":
        _well_known(duration_pb2.Duration(), value, where, "a duration in seconds such as 90s or 1.5s")
        return value
    if name == "google.protobuf.FieldMask":
        if not isinstance(value, str):
            raise FieldError(f"{where} must be a comma-separated list of field names")
        return value
    if name == "google.protobuf.Value":
        return value
    if name in _FREE_FORM:
        if not isinstance(value, _FREE_FORM[name]):
            raise FieldError(f"{where} must be a JSON {'object' if _FREE_FORM[name] is dict else 'list'}")
        return value
    return _message(value, descriptor, where)


def _well_known(msg: timestamp_pb2.Timestamp | duration_pb2.Duration, value: object, where: str, expected: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError
        msg.FromJsonString(value)
    except ValueError:
        raise FieldError(f"{where} must be {expected}; got {_shown(value)}") from None
