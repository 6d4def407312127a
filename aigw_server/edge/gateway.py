"""The transcoding gateway: finds the binding of an HTTP request, calls its gRPC method, answers in JSON, SSE or raw."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from prometheus_client import Counter, Histogram

from aigw_server.edge.bindings import HttpBinding, load_bindings
from aigw_server.edge.protocol import Request, Responder
from aigw_server.edge.status import OPAQUE_CODES, OPAQUE_MESSAGES, ErrorReply, error_reply, local_error, openai_error_json
from aigw_server.edge.templates import PathError, PathMatcher
from aigw_server.edge.transcode import RequestBuilder, ResponseRenderer, TranscodeError
from aigw_server.runtime.channels import CHANNEL_OPTIONS
from aigw_server.runtime.logs import request_id_var

log = logging.getLogger(__name__)

Resolver = Callable[[str], "str | None"]
Dialer = Callable[[str], grpc.aio.Channel]
"""Opens the long-lived channel to an upstream address (mTLS as the edge in a mesh with service identity)."""
Metadata = tuple[tuple[str, str], ...]
ReturnedMetadata = Iterable[tuple[str, str | bytes]]
"""Metadata as a call returns it (`grpc.aio.Metadata`): (key, value) pairs, bytes under `-bin` keys."""

JSON = "application/json"
# Liveness, apart from readiness (`GET /health`, the router's answer): says only that this process is up.
LIVENESS_PATH = "/livez"
LIVE_BODY = b'{"status":"live"}'
SSE = "text/event-stream"
_DETAILS_KEY = "grpc-status-details-bin"
# Never forwarded as metadata: hop-by-hop headers (RFC 9110 §7.6.1), what gRPC itself sets, what the edge rewrites.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "expect",
        "x-request-id",
        "x-forwarded-for",
    }
)
# gRPC sets its own user-agent on every call, so the client's travels under another key (Envoy copies it the same way).
_RENAMED = {"user-agent": "x-forwarded-user-agent"}
_NOT_RETURNED = frozenset({"content-type", "content-length", "date", "x-request-id", "connection", "transfer-encoding"})
_METADATA_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")

REQUESTS = Counter("aigw_edge_requests_total", "HTTP requests answered by the edge", ["rpc", "status"])
SECONDS = Histogram(
    "aigw_edge_request_duration_seconds",
    "Time from the parsed request to the end of the answer",
    ["rpc"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class UnaryCall(Protocol):
    """A unary call in flight (`grpc.aio.UnaryUnaryCall`): awaited for its reply."""

    def __await__(self) -> Generator[None, None, Message]:
        """The reply; raises `grpc.aio.AioRpcError` when the call fails."""

    async def initial_metadata(self) -> grpc.aio.Metadata | None:
        """The metadata the service sent before its reply."""

    async def trailing_metadata(self) -> grpc.aio.Metadata | None:
        """The metadata the service sent with its status (the router's `x-request-id` of a unary answer)."""


class StreamCall(Protocol):
    """A server-streaming call in flight (`grpc.aio.UnaryStreamCall`): read message by message."""

    async def read(self) -> object:
        """The next message, or `grpc.aio.EOF` (not a message) after the last; raises `grpc.aio.AioRpcError` on failure."""

    async def initial_metadata(self) -> grpc.aio.Metadata | None:
        """The metadata the service sent before its first message."""

    async def trailing_metadata(self) -> grpc.aio.Metadata | None:
        """The metadata the service sent with the end of the call."""

    def cancel(self) -> bool:
        """Ends the call (a no-op once it is done)."""


class UnaryMethod(Protocol):
    """Starts a unary call of one method (`grpc.aio.UnaryUnaryMultiCallable`)."""

    def __call__(self, request: Message, *, metadata: Metadata) -> UnaryCall:
        """The call, started."""


class StreamMethod(Protocol):
    """Starts a server-streaming call of one method (`grpc.aio.UnaryStreamMultiCallable`)."""

    def __call__(self, request: Message, *, metadata: Metadata) -> StreamCall:
        """The call, started."""


@dataclass
class Route:
    """A binding ready to serve: request builder, response renderer, its metric label and error shape."""

    binding: HttpBinding
    builder: RequestBuilder
    renderer: ResponseRenderer
    label: str
    openai_errors: bool


@dataclass
class UnaryRoute(Route):
    """A route to a unary method: one reply, answered as JSON or raw."""

    call: UnaryMethod


@dataclass
class StreamRoute(Route):
    """A route to a server-streaming method: relayed as server-sent events or a raw body."""

    call: StreamMethod


ServedRoute = UnaryRoute | StreamRoute
"""A route the gateway serves: always one of the two call kinds."""


def _metadata_key(name: str) -> str:
    """The metadata key a request header travels under, or "" when it is not forwarded."""
    if name in _RENAMED:
        return _RENAMED[name]
    forwarded = (
        name not in _NOT_FORWARDED
        and not name.startswith(("grpc-", ":"))
        and not name.endswith("-bin")
        and bool(name)
        and set(name) <= _METADATA_KEY_CHARS
    )
    return name if forwarded else ""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: bytes, trusted: Sequence[Network]) -> str:
    """The client's address as the edge can vouch for it.

    The peer of the connection, unless it is a trusted proxy: then the `X-Forwarded-For` entries are
    read from the right (the ones proxies appended), skipping trusted proxies, and the first other
    valid address is the client. A header that is not ASCII or names no valid address leaves the
    proxy's own address, never the edge's, so a broken header cannot hide a client behind the edge.
    """
    address = _address(peer)
    if address is None or not any(address in net for net in trusted) or not forwarded_for.isascii():
        return str(address) if address is not None else peer
    for entry in reversed(forwarded_for.decode("ascii").split(",")):
        hop = _address(entry)
        if hop is None:
            break
        if not any(hop in net for net in trusted):
            return str(hop)
    return str(address)


def _connection_tokens(request: Request) -> frozenset[str]:
    """Header names the client listed in Connection: hop-by-hop, never forwarded."""
    value = request.header("connection")
    if not value:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.decode("latin-1").split(","))


class Gateway:
    """Serves every HTTP binding of a descriptor set by calling the gRPC service that `resolve` locates."""

    def __init__(
        self,
        descriptor_set: bytes,
        resolve: Resolver,
        openai_prefix: str = "",
        dial: Dialer | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        """`openai_prefix`: paths under it answer errors in OpenAI's shape (the OpenAI-compatible surface)."""
        self.openai_prefix = openai_prefix
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self.pool: DescriptorPool
        self.pool, bindings = load_bindings(descriptor_set)
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.dial: Dialer = dial or (lambda address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        self.matcher: PathMatcher[ServedRoute] = PathMatcher()
        self.exact: dict[tuple[str, str], ServedRoute] = {}
        self.routes: list[ServedRoute] = []
        self._keys: dict[str, str] = {}
        self._metrics: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        for binding in bindings:
            route = self._route(binding, resolve)
            if route is not None:
                self._register(route)

    def _route(self, binding: HttpBinding, resolve: Resolver) -> ServedRoute | None:
        rpc = binding.rpc
        address = resolve(rpc.service)
        if address is None:
            log.warning("no address for %s; its HTTP bindings are not served", rpc.service)
            return None
        if rpc.client_streaming:
            log.warning("%s streams its requests; the edge does not transcode client streams", rpc.path)
            return None
        channel = self.channels.get(address)
        if channel is None:
            channel = self.channels[address] = self.dial(address)
        parts = (binding, RequestBuilder(binding), ResponseRenderer(binding, self.pool), rpc.path.rsplit(".", 1)[-1])
        openai = self._openai(binding.template.text)
        serialize, deserialize = rpc.request_cls.SerializeToString, rpc.response_cls.FromString
        # `_registered_method` (grpcio >= 1.63, absent from grpc-stubs) skips a per-call method-name lookup.
        if rpc.server_streaming:
            stream: StreamMethod = channel.unary_stream(
                rpc.path,
                request_serializer=serialize,
                response_deserializer=deserialize,
                _registered_method=True,  # type: ignore[call-arg]
            )
            return StreamRoute(*parts, openai, stream)
        unary: UnaryMethod = channel.unary_unary(
            rpc.path,
            request_serializer=serialize,
            response_deserializer=deserialize,
            _registered_method=True,  # type: ignore[call-arg]
        )
        return UnaryRoute(*parts, openai, unary)

    def _register(self, route: ServedRoute) -> None:
        binding = route.binding
        self.matcher.register(binding.http_method, binding.template, route)
        self.routes.append(route)
        template = binding.template
        if template.is_literal:
            path = "/" + "/".join(template.segments) + (":" + template.verb if template.verb else "")
            self.exact[(binding.http_method, path)] = route

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(None)

    # the request path

    async def handle(self, request: Request, responder: Responder) -> None:
        start = time.perf_counter()
        if request.path == LIVENESS_PATH:
            self._liveness(request, responder)
            self._observe("liveness", responder.status, start)
            return
        route = self.exact.get((request.method, request.path))
        parts: list[str] = []
        if route is None:
            match = self.matcher.lookup(request.method, request.path)
            if match is None:
                self._no_route(request, responder)
                self._observe("-", responder.status, start)
                return
            route, parts = match.target, match.parts
        rid = _request_id(request.header("x-request-id"))
        request_id_var.set(rid)
        content_type = request.header("content-type")
        try:
            msg = route.builder.build(parts, request.query, request.body, content_type.decode("latin-1") if content_type else "")
        except (TranscodeError, PathError) as exc:
            self._error(responder, rid, local_error(code_pb2.INVALID_ARGUMENT, str(exc)), route.openai_errors)
        else:
            metadata = self._metadata(request, rid)
            if isinstance(route, StreamRoute):
                await self._stream(route, msg, metadata, responder, rid)
            else:
                await self._unary(route, msg, metadata, responder, rid)
        self._observe(route.label, responder.status, start)

    async def _unary(self, route: UnaryRoute, msg: Message, metadata: Metadata, responder: Responder, rid: str) -> None:
        call = route.call(msg, metadata=metadata)
        try:
            reply = await call
        except grpc.aio.AioRpcError as exc:
            self._error(responder, rid, self._rpc_error(route, exc), route.openai_errors)
            return
        headers = _returned_headers(await call.initial_metadata(), rid, await call.trailing_metadata())
        if route.binding.raw_response:
            content_type, body = route.renderer.http_body(reply)
            if content_type:
                headers.append(("content-type", content_type))
            responder.send(200, headers, body)
        else:
            headers.append(("content-type", JSON))
            responder.send(200, headers, route.renderer.json(reply))

    async def _stream(self, route: StreamRoute, msg: Message, metadata: Metadata, responder: Responder, rid: str) -> None:
        call = route.call(msg, metadata=metadata)
        try:
            await self._relay(route, call, responder, rid)
        finally:
            call.cancel()

    async def _relay(self, route: StreamRoute, call: StreamCall, responder: Responder, rid: str) -> None:
        """Answers errors that come before the first message with their HTTP status; later ones end the stream."""
        raw = route.binding.raw_response
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._error(responder, rid, self._rpc_error(route, exc), route.openai_errors)
            return
        if raw and isinstance(first, Message):
            content_type, data = route.renderer.http_body(first)
            if content_type == JSON:
                await self._whole_body(route, call, responder, rid, data)
                return
        headers = _returned_headers(await call.initial_metadata(), rid)
        if not isinstance(first, Message):  # grpc.aio.EOF: the stream ended without a message
            responder.send(200, [*headers, ("content-type", SSE)] if not raw else headers, b"")
            return
        if raw:
            responder.start(200, [*headers, ("content-type", content_type)] if content_type else headers)
        else:
            data = route.renderer.sse(first)
            responder.start(200, [*headers, ("content-type", SSE)])
        try:
            while True:
                await responder.write(data)
                item = await call.read()
                if not isinstance(item, Message):  # grpc.aio.EOF
                    break
                data = route.renderer.http_body(item)[1] if raw else route.renderer.sse(item)
        except grpc.aio.AioRpcError as exc:
            reply = self._rpc_error(route, exc)
            if raw:
                responder.abort()
                return
            await responder.write(b"event: error\ndata: " + reply.body + b"\n\n")
        except ConnectionResetError:
            return
        responder.finish()

    async def _whole_body(self, route: StreamRoute, call: StreamCall, responder: Responder, rid: str, first: bytes) -> None:
        """A JSON answer on a body stream is one document, answered whole once the stream ends (with its length).

        Its request id comes with the end, in trailing metadata, as a unary answer's does; an error before
        the end is answered with its HTTP status, since nothing was sent yet.
        """
        parts = [first]
        try:
            while isinstance(item := await call.read(), Message):
                parts.append(route.renderer.http_body(item)[1])
        except grpc.aio.AioRpcError as exc:
            self._error(responder, rid, self._rpc_error(route, exc), route.openai_errors)
            return
        headers = _returned_headers(await call.initial_metadata(), rid, await call.trailing_metadata())
        responder.send(200, [*headers, ("content-type", JSON)], b"".join(parts))

    # errors

    def _rpc_error(self, route: Route, exc: grpc.aio.AioRpcError) -> ErrorReply:
        code = exc.code().value[0]
        status = None
        # grpc-stubs type these as grpc.Call's (key, value) objects; grpc.aio returns a grpc.aio.Metadata of pairs.
        trailers: ReturnedMetadata = exc.trailing_metadata() or ()  # type: ignore[assignment]
        for key, value in trailers:
            if key == _DETAILS_KEY and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
        if status is None:
            message = exc.details() or ""
            if code in OPAQUE_CODES:
                log.warning("%s failed: %s %s", route.binding.rpc.path, exc.code().name, message)
                message = OPAQUE_MESSAGES[code]
            status = status_pb2.Status(code=code, message=message)
        return error_reply(status, self.pool)

    def _openai(self, path: str) -> bool:
        return bool(self.openai_prefix) and path.startswith(self.openai_prefix)

    def _error(self, responder: Responder, rid: str, reply: ErrorReply, openai: bool = False) -> None:
        body = openai_error_json(reply.status, reply.http_status) if openai and reply.status is not None else reply.body
        responder.send(reply.http_status, [("x-request-id", rid), ("content-type", JSON), *reply.headers], body)

    def _liveness(self, request: Request, responder: Responder) -> None:
        """`GET /livez`: the edge process is up and answering, and nothing more (readiness is `GET /health`)."""
        rid = _request_id(request.header("x-request-id"))
        if request.method not in ("GET", "HEAD"):
            reply = local_error(code_pb2.UNIMPLEMENTED, f"{request.method} is not allowed on {LIVENESS_PATH}", 405)
            reply.headers.append(("allow", "GET, HEAD"))
            self._error(responder, rid, reply)
            return
        responder.send(200, [("x-request-id", rid), ("content-type", JSON)], LIVE_BODY)

    def _no_route(self, request: Request, responder: Responder) -> None:
        rid = _request_id(request.header("x-request-id"))
        allowed = self.matcher.allowed_methods(request.path)
        if allowed:
            reply = local_error(code_pb2.UNIMPLEMENTED, f"{request.method} is not allowed on {request.path}", 405)
            reply.headers.append(("allow", ", ".join(allowed)))
        else:
            reply = local_error(code_pb2.NOT_FOUND, f"no route for {request.method} {request.path}")
        self._error(responder, rid, reply, self._openai(request.path))

    # headers and metrics

    def _metadata(self, request: Request, rid: str) -> Metadata:
        """Request headers as gRPC metadata: lowercase, hop-by-hop dropped, the request id and client address added.

        `x-forwarded-for` carries one address, the client's: the connection's peer, or, when the peer
        is a configured trusted proxy, the last address its `X-Forwarded-For` names that is not one.
        """
        metadata = [("x-request-id", rid)]
        forwarded_header = b""
        dropped = _connection_tokens(request)
        for name, value in request.headers:
            key = self._keys.get(name)
            if key is None:
                key = _metadata_key(name)
                if len(self._keys) < 1024:
                    self._keys[name] = key
            if key and name not in dropped:
                text = value.decode("latin-1")
                if text.isascii() and text.isprintable():
                    metadata.append((key, text))
            elif name == "x-forwarded-for":
                forwarded_header = forwarded_header + b"," + value if forwarded_header else value
        metadata.append(("x-forwarded-for", client_address(request.client, forwarded_header, self.trusted_proxies)))
        return tuple(metadata)

    def _observe(self, label: str, status: int, start: float) -> None:
        key = (label, status)
        child = self._metrics.get(key)
        if child is None:
            child = self._metrics[key] = (REQUESTS.labels(label, str(status)), SECONDS.labels(label))
        child[0].inc()
        child[1].observe(time.perf_counter() - start)


def _request_id(value: bytes | None) -> str:
    """The client's X-Request-ID when it is sane (1-128 visible ASCII characters), otherwise a new one."""
    if value and len(value) <= 128:
        text = value.decode("latin-1")
        if text.isascii() and text.isprintable() and " " not in text:
            return text
    return os.urandom(16).hex()


def _returned_headers(
    metadata: ReturnedMetadata | None, rid: str, trailing: ReturnedMetadata | None = None
) -> list[tuple[str, str]]:
    """Response initial metadata as HTTP headers (as Envoy passes them), without gRPC's own and binary keys.

    `x-request-id` is the service's own when it sent one (the router's is the id the request is stored
    under), else the edge's: a unary answer's comes in its trailing metadata (`trailing`), a stream's in
    its initial metadata (where a router from before that rule sent a unary answer's too).
    """
    rid = _service_request_id(trailing) or _service_request_id(metadata) or rid
    headers = [("x-request-id", rid)]
    for key, value in metadata or ():
        if (
            isinstance(value, str)
            and key not in _NOT_RETURNED
            and not key.startswith(("grpc-", ":"))
            and not key.endswith("-bin")
        ):
            headers.append((key, value))
    return headers


def _service_request_id(metadata: ReturnedMetadata | None) -> str:
    """The `x-request-id` a service sent in `metadata` (its last), "" when none."""
    found = ""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and value:
            found = value
    return found
