"""The server interceptor of every aigw server: the concerns below, outermost first, fused into one.

1. request id    — takes `x-request-id` metadata or makes one; sets the log context.
2. access log    — one log line per call with method, code and duration.
3. metrics       — Prometheus counters and latency histograms per method and code.
4. authorization — with service identity on, `aigw_server.runtime.authz.POLICY` decides who may call what.
5. error mapping — domain errors -> gRPC statuses; unparsable requests -> INVALID_ARGUMENT;
   unexpected errors -> logged INTERNAL; the trailing metadata of every error of a unary or
   server-streaming call carry the call's `x-request-id`.

All of them cover unary and server-streaming RPCs (the only kinds the public protos use); a
client-streaming method gets the authorization check only. They are one interceptor, not five,
and each method's wrapped handler is built once and kept: grpc.aio runs every interceptor's
`intercept_service` (a coroutine) on every call, and rebuilding the chain of handlers per call
cost more CPU than the concerns themselves (docs/performance.md, "profile-driven cuts").
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from aigw_server.runtime import authz
from aigw_server.runtime.errors import GatewayError, InvalidArgument
from aigw_server.runtime.logs import request_id_var
from aigw_server.runtime.rpc_errors import internal_status, request_id_metadata, to_status

log = logging.getLogger("aigw.rpc")

Ctx = grpc.aio.ServicerContext[Any, Any]
Unary = Callable[[Any, Ctx], Awaitable[Any]]
Streaming = Callable[[Any, Ctx], AsyncIterator[Any]]

RPC_TOTAL = Counter("aigw_rpc_requests_total", "RPCs handled", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "aigw_rpc_duration_seconds",
    "RPC handling time",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def _code_name(context: Ctx) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return str(code)


def _metadata(context: Ctx, key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return ""


def _begin(context: Ctx) -> float:
    """Sets the call's request id (the caller's `x-request-id`, else a new one); returns the start time."""
    request_id_var.set(_metadata(context, "x-request-id")[:128] or uuid.uuid4().hex)
    return time.perf_counter()


MALFORMED = object()
"""Stands for a request message that could not be parsed (gRPC would otherwise answer UNKNOWN naming the exception)."""
MALFORMED_MESSAGE = "the request message is not valid protobuf for this method"


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering MALFORMED instead of raising for bytes that do not parse."""
    if deserializer is None:
        return None
    parse = deserializer

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # noqa: BLE001 - any parse failure is the caller's malformed message
            return MALFORMED

    return tolerant


# grpc-stubs make this class generic; grpc's own is not subscriptable at run time
class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request id, access log, metrics, authorization (when `authorize`) and error mapping, in that order."""

    def __init__(self, service: str, authorize: bool = False) -> None:
        self.service = service
        self.authorize = authorize
        self._handlers: dict[str, Any] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # an unknown method: not kept, so arbitrary names cannot grow the table
            handler = self._handlers[method] = self._wrap(method, handler)
        return handler

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream_unary(method, handler.stream_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._client_stream_stream(method, handler.stream_stream),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _done(self, method: str, name: str, context: Ctx, start: float) -> None:
        """Access log line and metrics of a finished call."""
        seconds = time.perf_counter() - start
        code = _code_name(context)
        level = logging.DEBUG if code == "OK" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": method, "code": code, "ms": round(seconds * 1000, 3)})
        counter = self._counters.get((name, code))
        if counter is None:
            counter = self._counters[(name, code)] = RPC_TOTAL.labels(self.service, name, code)
        counter.inc()
        timer = self._timers.get(name)
        if timer is None:
            timer = self._timers[name] = RPC_SECONDS.labels(self.service, name)
        timer.observe(seconds)

    @staticmethod
    async def _fail(method: str, context: Ctx, exc: Exception, request_id: bool = True) -> None:
        """Ends the call with the error's status; its trailing metadata carries the status's details
        (`grpc-status-details-bin`) and, with `request_id`, the call's `x-request-id` (they replace what the
        servicer set as trailing metadata before it failed: the router sets only the request id).

        Client-streaming calls have no one request id (the queue's Session stream carries many), so theirs
        go without."""
        if isinstance(exc, GatewayError):
            status = to_status(exc)
        else:
            log.error("unhandled error in %s", method, exc_info=exc)
            status = internal_status()
        trailing = (*status.trailing_metadata, *request_id_metadata()) if request_id else status.trailing_metadata
        await context.abort(status.code, status.details, trailing)

    def _unary(self, method: str, behavior: Unary) -> Unary:
        name = method.rsplit("/", 1)[-1]
        check = authz.authorize if self.authorize else None
        done, fail = self._done, self._fail

        async def run(request: Any, context: Ctx) -> Any:
            start = _begin(context)
            try:
                if check is not None:
                    await check(method, context)
                try:
                    if request is MALFORMED:
                        raise InvalidArgument(MALFORMED_MESSAGE)
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - this is the one boundary
                    await fail(method, context, exc)
            finally:
                done(method, name, context, start)

        return run

    def _stream(self, method: str, behavior: Streaming) -> Streaming:
        name = method.rsplit("/", 1)[-1]
        check = authz.authorize if self.authorize else None
        done, fail = self._done, self._fail

        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            start = _begin(context)
            try:
                if check is not None:
                    await check(method, context)
                try:
                    if request is MALFORMED:
                        raise InvalidArgument(MALFORMED_MESSAGE)
                    async for item in behavior(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - this is the one boundary
                    await fail(method, context, exc)
            finally:
                done(method, name, context, start)

        return run

    def _client_stream_unary(self, method: str, behavior: Unary) -> Unary:
        """A client-streaming method: authorized once at open; a message that does not parse ends it INVALID_ARGUMENT."""
        check = authz.authorize if self.authorize else None
        fail = self._fail

        async def run(requests: Any, context: Ctx) -> Any:
            if check is not None:
                await check(method, context)
            try:
                return await behavior(_parsed(requests), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one boundary
                await fail(method, context, exc, request_id=False)

        return run

    def _client_stream_stream(self, method: str, behavior: Streaming) -> Streaming:
        """A bidirectional method: authorized once at open; a message that does not parse ends it INVALID_ARGUMENT."""
        check = authz.authorize if self.authorize else None
        fail = self._fail

        async def run(requests: Any, context: Ctx) -> AsyncIterator[Any]:
            if check is not None:
                await check(method, context)
            try:
                async for item in behavior(_parsed(requests), context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one boundary
                await fail(method, context, exc, request_id=False)

        return run


async def _parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The stream's messages; one that could not be parsed raises InvalidArgument, as a unary call would answer."""
    async for request in requests:
        if request is MALFORMED:
            raise InvalidArgument(MALFORMED_MESSAGE)
        yield request


# grpc-stubs make ServerInterceptor generic; grpc's own is not subscriptable at run time
def server_interceptors(service: str, authorize: bool = False) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The interceptors of every aigw server (one: see the module's docstring); `authorize` with service identity on."""
    return [ServerInterceptor(service, authorize)]
