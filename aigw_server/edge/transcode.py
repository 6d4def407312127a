"""REST ⇄ protobuf for one binding: request messages from path, query and body; answers as JSON, raw HttpBody or SSE."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from aigw_server.edge.bindings import BindingError, HttpBinding, descriptor_of, resolve_field_path
from aigw_server.edge.jsonmap import FieldError, conform
from aigw_server.edge.render import JsonRenderer
from aigw_server.edge.templates import PathError

# Well-known types whose JSON form is a string, so a query parameter can set them.
_STRING_JSON_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
_BOOLS = {"true": True, "false": False}
_PARSED_FIELD = re.compile(r"Failed to parse (\w+) field")


class TranscodeError(ValueError):
    """The HTTP request does not map onto the RPC's request message (answered 400 INVALID_ARGUMENT)."""


def parse_query(query: str) -> list[tuple[str, str]]:
    """`a=1&b.c=x` -> pairs; parameters without `=` or with an empty name are skipped as Envoy does."""
    pairs = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if sep and name:
            try:
                pairs.append((unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")))
            except UnicodeDecodeError:
                raise TranscodeError(f"query parameter {name!r} is not percent-encoded UTF-8") from None
    return pairs


class RequestBuilder:
    """Builds the request message of one binding from a matched path, the query string and the body."""

    def __init__(self, binding: HttpBinding) -> None:
        self.binding = binding
        self.cls = binding.rpc.request_cls
        self.descriptor = descriptor_of(self.cls)
        variables = [(var, resolve_field_path(self.descriptor, var.field_path)) for var in binding.template.variables]
        # Strings (the common case) are set on the message directly; other types go through protobuf's JSON parser.
        self.string_variables = [(var, f) for var, f in variables if f[-1].type == FieldDescriptor.TYPE_STRING]
        self.typed_variables = [(var, f) for var, f in variables if f[-1].type != FieldDescriptor.TYPE_STRING]
        self.body = binding.body
        self.raw_body = binding.request_is_http_body or binding.body_field_is_http_body
        self._paths: dict[str, list[FieldDescriptor]] = {}

    def build(self, parts: list[str], query: str, body: bytes, content_type: str) -> Message:
        """The request message; path variables win over query parameters, which win over the body."""
        msg = self.cls()
        if self.body:
            self._fill_body(msg, body, content_type)
        try:
            values: dict[str, Any] = {}
            if query:
                for name, value in parse_query(query):
                    self._put(values, self._query_field(name), value)
            for var, fields in self.typed_variables:
                self._put(values, fields, var.bind(parts))
            if values:
                if self.body:
                    extra = self.cls()
                    _parse(values, extra)
                    msg.MergeFrom(extra)
                else:
                    _parse(values, msg)
            for var, fields in self.string_variables:
                _set_string(msg, fields, var.bind(parts))
        except PathError as exc:
            raise TranscodeError(str(exc)) from None
        return msg

    def _fill_body(self, msg: Message, body: bytes, content_type: str) -> None:
        if self.raw_body:
            target: Any = msg if self.body == "*" else getattr(msg, self.body)
            target.content_type = content_type
            target.data = body
            return
        try:
            obj = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            raise TranscodeError(f"the body is not valid JSON: {exc}") from None
        if self.body == "*":
            if not isinstance(obj, dict):
                raise TranscodeError("the JSON body must be an object")
            _parse(obj, msg)
        else:
            _parse({self.body: obj}, msg)

    def _query_field(self, name: str) -> list[FieldDescriptor]:
        fields = self._paths.get(name)
        if fields is None:
            try:
                fields = resolve_field_path(self.descriptor, tuple(name.split(".")))
            except BindingError:
                raise TranscodeError(f"query parameter {name!r} is not a parameter of this request") from None
            leaf = fields[-1]
            if leaf.message_type is not None and (leaf.message_type.full_name not in _STRING_JSON_TYPES or leaf.is_repeated):
                raise TranscodeError(f"query parameter {name!r} names a group of fields; set each ({name}.<field>=...)")
            self._paths[name] = fields
        return fields

    @staticmethod
    def _put(values: dict[str, Any], fields: list[FieldDescriptor], raw: str) -> None:
        node = values
        for field in fields[:-1]:
            node = node.setdefault(field.name, {})
        leaf = fields[-1]
        value = _scalar(leaf, raw)
        if leaf.is_repeated:
            node.setdefault(leaf.name, []).append(value)
        else:
            node[leaf.name] = value


def _set_string(msg: Any, fields: list[FieldDescriptor], value: str) -> None:
    for field in fields[:-1]:
        msg = getattr(msg, field.name)
    setattr(msg, fields[-1].name, value)


def _scalar(field: FieldDescriptor, raw: str) -> Any:
    """A query/path string as the JSON value protobuf's parser expects for this field."""
    if field.type == FieldDescriptor.TYPE_BOOL or (field.message_type is not None and field.message_type.name == "BoolValue"):
        if raw not in _BOOLS:
            raise TranscodeError(f"{field.name} must be true or false; got {raw!r}")
        return _BOOLS[raw]
    return raw


def _parse(obj: dict[str, Any], msg: Message) -> None:
    """Parses JSON into `msg` after checking it field by field, so that a refusal names the field in snake_case."""
    try:
        checked = conform(obj, descriptor_of(msg))
    except FieldError as exc:
        raise TranscodeError(str(exc)) from None
    try:
        json_format.ParseDict(checked, msg)
    except (json_format.ParseError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        named = _PARSED_FIELD.search(str(exc))
        where = f"{named.group(1)} has a value this request cannot take" if named else "the body does not fit this request"
        raise TranscodeError(f"{where}; check the field's type and range in the API reference") from None


class ResponseRenderer:
    """Turns response messages into HTTP bodies: JSON (snake_case, primitives always printed) or raw HttpBody."""

    def __init__(self, binding: HttpBinding, pool: DescriptorPool) -> None:
        self.pool = pool
        self.renderer = JsonRenderer(pool)  # MessageToDict(preserving_proto_field_name, always_print_...) planned per type
        self.field = binding.response_body
        self.raw = binding.raw_response
        descriptor = binding.rpc.response_cls.DESCRIPTOR
        self.field_is_message = bool(self.field) and descriptor.fields_by_name[self.field].message_type is not None

    def json(self, msg: Message) -> bytes:
        obj: Any = self.renderer.render(msg)
        if self.field:
            obj = obj.get(self.field, {} if self.field_is_message else None)
        return orjson.dumps(obj)

    def http_body(self, msg: Message) -> tuple[str, bytes]:
        body: Any = getattr(msg, self.field) if self.field else msg
        return body.content_type, body.data

    def sse(self, msg: Message) -> bytes:
        return b"data: " + self.json(msg) + b"\n\n"
