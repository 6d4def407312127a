"""Servicers called in process, with no server and no socket, behind the interceptor every aigw server runs.

grpc_testing drives synchronous servicers only; aigw's servicers are grpc.aio coroutines, so a call here
builds the method's handler from the proto's service descriptor, wraps it with `ServerInterceptor` (request
id, error mapping) and runs it on `InProcessContext`, a stand-in `grpc.aio.ServicerContext` that keeps the
status, details and metadata a real server would send. Requests and replies cross the wire form
(serialised and parsed) as they would on a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import NoReturn, TypeAlias, cast

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from aigw_server.runtime.interceptors import ServerInterceptor

Metadata = tuple[tuple[str, str | bytes], ...]
Handler: TypeAlias = "grpc.RpcMethodHandler[Message, Message]"  # generic in grpc-stubs only, so quoted
# grpc-stubs type a handler's behaviours as synchronous; grpc.aio's are coroutines and async generators.
UnaryBehavior = Callable[[object, "InProcessContext"], Awaitable[Message]]
StreamBehavior = Callable[[object, "InProcessContext"], AsyncIterator[Message]]


class InProcessContext(grpc.aio.ServicerContext[Message, Message]):
    """The servicer context of one call: what the caller sent, and what the servicer answered besides messages."""

    def __init__(self, metadata: Iterable[tuple[str, str]] = ()) -> None:
        self._invocation = grpc.aio.Metadata(*metadata)
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.initial_metadata: Metadata = ()
        self.trailing_metadata_sent: Metadata = ()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: grpc.aio.MetadataType = ()) -> NoReturn:
        self._code, self._details, self.trailing_metadata_sent = code, details, tuple(trailing_metadata)
        raise grpc.aio.AbortError(f"{code.name}: {details}")

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """As grpc.aio's: the status's code, details and trailing metadata (`grpc-status-details-bin`)."""
        await self.abort(status.code, status.details, status.trailing_metadata)

    async def read(self) -> Message:
        raise grpc.aio.UsageError("unary-request RPCs have no request stream to read")

    async def write(self, message: Message) -> None:
        raise grpc.aio.UsageError("servicers yield their stream's messages; they do not write them")

    async def send_initial_metadata(self, initial_metadata: grpc.aio.MetadataType) -> None:
        self.initial_metadata = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: grpc.aio.MetadataType) -> None:
        self.trailing_metadata_sent = tuple(trailing_metadata)

    def invocation_metadata(self) -> grpc.aio.Metadata:
        return self._invocation

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_compression(self, compression: grpc.Compression) -> None:
        return None

    def disable_next_message_compression(self) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {}

    def code(self) -> grpc.StatusCode:
        """The status the call ended with (OK unless it was set or the call aborted)."""
        return self._code or grpc.StatusCode.OK

    def details(self) -> str:
        return self._details


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: grpc.aio.Metadata) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class InProcessService:
    """One servicer's RPCs, called by name, each through `ServerInterceptor` as on a server of `service_name`."""

    def __init__(self, service: ServiceDescriptor, servicer: object, service_name: str) -> None:
        self.service = service
        self.servicer = servicer
        self.interceptor = ServerInterceptor(service_name)

    async def _handler(self, name: str, context: InProcessContext) -> Handler:
        method: MethodDescriptor = self.service.methods_by_name[name]
        behavior = getattr(self.servicer, name)
        serialize = GetMessageClass(method.output_type).SerializeToString
        parse = GetMessageClass(method.input_type).FromString
        if method.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler(behavior, request_deserializer=parse, response_serializer=serialize)
        else:
            handler = grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=parse, response_serializer=serialize)

        async def continuation(details: grpc.HandlerCallDetails) -> Handler:
            return handler

        path = f"/{self.service.full_name}/{name}"
        wrapped: Handler = await self.interceptor.intercept_service(
            continuation, _CallDetails(path, context.invocation_metadata())
        )
        return wrapped

    async def unary(self, name: str, request: Message | bytes, context: InProcessContext) -> Message:
        """The reply of a unary RPC, parsed from its wire form; raises grpc.aio.AbortError when the call fails."""
        handler = await self._handler(name, context)
        call = cast(UnaryBehavior, handler.unary_unary)
        reply = await call(_parsed(handler, request), context)
        return _reparsed(self.service.methods_by_name[name], handler, reply)

    async def stream(self, name: str, request: Message | bytes, context: InProcessContext) -> list[Message]:
        """Every message of a server-streaming RPC; raises grpc.aio.AbortError when the call fails."""
        handler = await self._handler(name, context)
        call = cast(StreamBehavior, handler.unary_stream)
        method = self.service.methods_by_name[name]
        return [_reparsed(method, handler, item) async for item in call(_parsed(handler, request), context)]


def _parsed(handler: Handler, request: Message | bytes) -> object:
    """The request as the server hands it on: parsed from the bytes a client would send."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    parse = handler.request_deserializer
    assert parse is not None, "every handler here has a request parser"
    return parse(data)


def _reparsed(method: MethodDescriptor, handler: Handler, reply: Message) -> Message:
    """The reply as a client receives it: serialised, then parsed."""
    serialize = handler.response_serializer
    assert serialize is not None, "every handler here has a reply serialiser"
    return GetMessageClass(method.output_type).FromString(serialize(reply))
