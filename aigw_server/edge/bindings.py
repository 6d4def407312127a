"""The HTTP bindings of a FileDescriptorSet: every `google.api.http` rule (and its additional bindings) of every method."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from aigw_server.edge.templates import ANY_METHOD, PathTemplate, TemplateError

HTTP_BODY = "google.api.HttpBody"
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class BindingError(ValueError):
    """An HttpRule cannot be served (bad template, unknown field, duplicate binding)."""


@dataclass(frozen=True)
class RpcMethod:
    """A gRPC method with its message classes, built from the descriptor set."""

    service: str
    name: str
    path: str
    request_cls: type[Message]
    response_cls: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def response_is_http_body(self) -> bool:
        return self.response_cls.DESCRIPTOR.full_name == HTTP_BODY


@dataclass(frozen=True)
class HttpBinding:
    """One HTTP method + path template bound to an RPC, with its body and response_body mapping."""

    rpc: RpcMethod
    http_method: str
    template: PathTemplate
    body: str
    response_body: str

    @property
    def request_is_http_body(self) -> bool:
        return self.body == "*" and self.rpc.request_cls.DESCRIPTOR.full_name == HTTP_BODY

    @property
    def body_field_is_http_body(self) -> bool:
        if self.body in ("", "*"):
            return False
        field = self.rpc.request_cls.DESCRIPTOR.fields_by_name[self.body]
        return field.message_type is not None and field.message_type.full_name == HTTP_BODY

    @property
    def raw_response(self) -> bool:
        """True when the answer is an HttpBody passed through as is (content type and bytes)."""
        if self.response_body:
            field = self.rpc.response_cls.DESCRIPTOR.fields_by_name[self.response_body]
            return field.message_type is not None and field.message_type.full_name == HTTP_BODY
        return self.rpc.response_is_http_body


def load_pool(descriptor_set: bytes) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorSet]:
    """A private descriptor pool holding every file of a serialized FileDescriptorSet (with its imports)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return pool, fds


def load_bindings(descriptor_set: bytes) -> tuple[descriptor_pool.DescriptorPool, list[HttpBinding]]:
    """Every HTTP binding declared in the set, validated; raises BindingError for one that cannot be served."""
    pool, fds = load_pool(descriptor_set)
    bindings: list[HttpBinding] = []
    for file in fds.file:
        for service in file.service:
            full = f"{file.package}.{service.name}" if file.package else service.name
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rule = method.options.Extensions[annotations_pb2.http]
                    rpc = _rpc_method(pool.FindMethodByName(f"{full}.{method.name}"))
                    bindings.extend(_bindings_of(rpc, rule))
    return pool, bindings


def annotated_services(descriptor_set: bytes) -> list[str]:
    """Full names of the services with at least one HTTP-annotated method."""
    _, bindings = load_bindings(descriptor_set)
    return sorted({b.rpc.service for b in bindings})


def _rpc_method(method: MethodDescriptor) -> RpcMethod:
    service = method.containing_service.full_name
    return RpcMethod(
        service=service,
        name=method.name,
        path=f"/{service}/{method.name}",
        request_cls=message_factory.GetMessageClass(method.input_type),
        response_cls=message_factory.GetMessageClass(method.output_type),
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
    )


def _bindings_of(rpc: RpcMethod, rule: http_pb2.HttpRule) -> Iterator[HttpBinding]:
    yield _binding(rpc, rule)
    for extra in rule.additional_bindings:
        if extra.additional_bindings:
            raise BindingError(f"{rpc.path}: additional_bindings must not nest")
        yield _binding(rpc, extra)


def _binding(rpc: RpcMethod, rule: http_pb2.HttpRule) -> HttpBinding:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise BindingError(f"{rpc.path}: HttpRule without a method and path")
    if pattern == "custom":
        http_method, text = rule.custom.kind.upper() or ANY_METHOD, rule.custom.path
    else:
        http_method, text = pattern.upper(), getattr(rule, pattern)
    try:
        template = PathTemplate.parse(text)
    except TemplateError as exc:
        raise BindingError(f"{rpc.path}: {exc}") from None
    binding = HttpBinding(rpc, http_method, template, rule.body, rule.response_body)
    _check(binding)
    return binding


def _check(binding: HttpBinding) -> None:
    rpc = binding.rpc
    request = descriptor_of(rpc.request_cls)
    for var in binding.template.variables:
        leaf = resolve_field_path(request, var.field_path)[-1]
        if leaf.is_repeated or leaf.message_type is not None:
            raise BindingError(f"{rpc.path}: path variable {'.'.join(var.field_path)} must be a singular primitive field")
    if binding.body not in ("", "*") and binding.body not in request.fields_by_name:
        raise BindingError(f"{rpc.path}: body field {binding.body!r} is not a top-level field of {request.full_name}")
    if binding.response_body and binding.response_body not in rpc.response_cls.DESCRIPTOR.fields_by_name:
        response = rpc.response_cls.DESCRIPTOR.full_name
        raise BindingError(f"{rpc.path}: response_body {binding.response_body!r} is not a field of {response}")


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    """The descriptor of a message or message class.

    protobuf's stubs type `DESCRIPTOR` as `Descriptor | _upb_Descriptor`, a private class of the C
    implementation; at run time it is `google.protobuf.descriptor.Descriptor` either way.
    """
    return cast(Descriptor, message.DESCRIPTOR)


def find_field(message: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON name (lowerCamel or json_name), as Envoy's type resolver accepts."""
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in message.fields:
        if candidate.json_name == name:
            return candidate
    return None


def resolve_field_path(message: Descriptor, names: tuple[str, ...]) -> list[FieldDescriptor]:
    """The fields along a dotted path; every field but the last must be a singular message."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in names:
        if current is None:
            raise BindingError(f"field path {'.'.join(names)!r}: {fields[-1].name} is not a message")
        field = find_field(current, name)
        if field is None:
            raise BindingError(f"field path {'.'.join(names)!r}: {current.full_name} has no field {name!r}")
        if fields and fields[-1].is_repeated:
            raise BindingError(f"field path {'.'.join(names)!r}: {fields[-1].name} is repeated")
        fields.append(field)
        current = field.message_type
    return fields
