"""Response messages as JSON objects, the same as protobuf's `MessageToDict` with the edge's options, in a fraction of the time.

The edge answers with `json_format.MessageToDict(msg, preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)`. That walks every field of every message through a chain
of type checks on each call (about 30 µs for a chat answer, and once per token for a stream). Here the
walk is planned once per message type: each field's converter is chosen up front, and the defaults
of the fields without presence are computed once. The output is the same object, keys in the same
order (set fields in field-number order, then the unset fields without presence in declaration
order). Whatever the plan does not cover is handed to protobuf's own printer, with the same
options, so it cannot differ: well-known types and wrappers, messages with map fields, extensions,
closed enums, float fields, and enum values when a JSON name option for enum values exists.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

Render = Callable[[Any], Any]
_json: Any = json_format  # its printer and helpers are private (no stubs); pinned by the lock file, checked by the tests
_LIST = object()
"""Stands for the default of a repeated field: a new empty list each time."""

_PLAIN = frozenset({FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32})
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def _same(value: Any) -> Any:
    return value


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


class JsonRenderer:
    """`render(msg)` equals `MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)`."""

    def __init__(self, pool: DescriptorPool | None = None) -> None:
        self._printer = _json._Printer(  # the printer MessageToDict builds, kept for what the plans hand over
            preserving_proto_field_name=True, always_print_fields_with_no_presence=True, descriptor_pool=pool
        )
        self._plans: dict[str, Render] = {}

    def render(self, msg: Message) -> Any:
        return self._plan(msg.DESCRIPTOR)(msg)

    def _plan(self, descriptor: Any) -> Render:
        plan = self._plans.get(descriptor.full_name)
        if plan is None:
            plan = self._plans[descriptor.full_name] = self._build(descriptor)
        return plan

    def _build(self, descriptor: Descriptor) -> Render:
        printer = self._printer
        whole: Render = printer._MessageToJsonObject
        if _json._IsWrapperMessage(descriptor) or descriptor.full_name in _json._WKTJSONMETHODS:
            return whole
        if any(_json._IsMapEntry(field) for field in descriptor.fields):
            return whole
        converters: dict[int, tuple[str, bool, Render]] = {}
        defaults: list[tuple[str, Any]] = []
        for field in descriptor.fields:
            converters[field.number] = (field.name, field.is_repeated, self._converter(field))
            if field.has_presence:
                continue
            default = _LIST if field.is_repeated else printer._FieldToJsonObject(field, field.default_value)
            defaults.append((field.name, default))

        def render(msg: Any) -> Any:
            js: dict[str, Any] = {}
            for field, value in msg.ListFields():
                entry = converters.get(field.number)
                if entry is None or field.is_extension:
                    return whole(msg)
                name, repeated, convert = entry
                js[name] = [convert(v) for v in value] if repeated else convert(value)
            for name, default in defaults:
                if name not in js:
                    js[name] = [] if default is _LIST else default
            return js

        return render

    def _converter(self, field: FieldDescriptor) -> Render:
        """How one value of `field` becomes JSON (json_format's `_FieldToJsonObject`, decided once)."""
        printer = self._printer
        kind = field.cpp_type
        if kind == FieldDescriptor.CPPTYPE_MESSAGE:
            message_type = field.message_type

            def nested(value: Any) -> Any:  # planned on first use: message types may refer to each other
                return self._plan(message_type)(value)

            return nested
        if kind == FieldDescriptor.CPPTYPE_STRING:
            return _base64 if field.type == FieldDescriptor.TYPE_BYTES else str
        if kind == FieldDescriptor.CPPTYPE_BOOL:
            return bool
        if kind in _PLAIN:
            return _same
        if kind in _INT64:
            return str
        enum: Any = field.enum_type
        if (
            kind == FieldDescriptor.CPPTYPE_ENUM
            and not enum.is_closed
            and enum.full_name != "google.protobuf.NullValue"
            and printer._GetEnumValueJsonExtension() is None
        ):
            names = {value.number: value.name for value in enum.values}
            return lambda value: names.get(value, value)
        return lambda value: printer._FieldToJsonObject(field, value)
