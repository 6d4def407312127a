"""Server interceptors, one concern each. Order (outermost first), as installed by `server.create_server`:

1. RequestIdInterceptor   — takes `x-request-id` metadata or makes one; sets the log context.
2. AccessLogInterceptor   — one log line per call with method, code and duration.
3. MetricsInterceptor     — Prometheus counters and latency histograms per method and code.
4. ErrorMappingInterceptor — domain errors -> gRPC statuses; unparsable requests -> INVALID_ARGUMENT;
   unexpected errors -> logged INTERNAL.

All of them cover unary and server-streaming RPCs (the only kinds the protos use).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from aigw_common.errors import GatewayError, InvalidArgument
from aigw_common.logs import request_id_var
from aigw_common.rpc_errors import internal_status, to_status

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


class _WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps the behaviour of unary-response and server-streaming handlers."""

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        return behavior

    def wrap_stream(self, method: str, behavior: Streaming) -> Streaming:
        return behavior

    def wrap_deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        return deserializer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(method, handler.unary_unary),
                request_deserializer=self.wrap_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(method, handler.unary_stream),
                request_deserializer=self.wrap_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def _metadata(context: Ctx, key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return ""


class RequestIdInterceptor(_WrappingInterceptor):
    """Propagates `x-request-id` (or makes one) into the log context and the response metadata."""

    @staticmethod
    def _begin(context: Ctx) -> None:
        rid = _metadata(context, "x-request-id")[:128] or uuid.uuid4().hex
        request_id_var.set(rid)

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        async def run(request: Any, context: Ctx) -> Any:
            self._begin(context)
            return await behavior(request, context)

        return run

    def wrap_stream(self, method: str, behavior: Streaming) -> Streaming:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            self._begin(context)
            async for item in behavior(request, context):
                yield item

        return run


class AccessLogInterceptor(_WrappingInterceptor):
    """Logs each call's method, status code and duration (DEBUG for OK, INFO otherwise)."""

    @staticmethod
    def _log(method: str, context: Ctx, start: float) -> None:
        code = _code_name(context)
        level = logging.DEBUG if code == "OK" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": method, "code": code, "ms": round((time.perf_counter() - start) * 1000, 3)})

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        async def run(request: Any, context: Ctx) -> Any:
            start = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                self._log(method, context, start)

        return run

    def wrap_stream(self, method: str, behavior: Streaming) -> Streaming:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                self._log(method, context, start)

        return run


class MetricsInterceptor(_WrappingInterceptor):
    """Counts calls by code and observes their duration."""

    def __init__(self, service: str) -> None:
        self.service = service

    def _observe(self, method: str, context: Ctx, start: float) -> None:
        name = method.rsplit("/", 1)[-1]
        RPC_TOTAL.labels(self.service, name, _code_name(context)).inc()
        RPC_SECONDS.labels(self.service, name).observe(time.perf_counter() - start)

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        async def run(request: Any, context: Ctx) -> Any:
            start = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                self._observe(method, context, start)

        return run

    def wrap_stream(self, method: str, behavior: Streaming) -> Streaming:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                self._observe(method, context, start)

        return run


MALFORMED = object()
"""Stands for a request message that could not be parsed (gRPC would otherwise answer UNKNOWN naming the exception)."""


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Domain errors become their gRPC status; unparsable requests INVALID_ARGUMENT; anything unexpected a logged INTERNAL."""

    def wrap_deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        if deserializer is None:
            return None
        parse = deserializer

        def tolerant(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception:  # noqa: BLE001 - any parse failure is the caller's malformed message
                return MALFORMED

        return tolerant

    @staticmethod
    def _check(request: Any) -> None:
        if request is MALFORMED:
            raise InvalidArgument("the request message is not valid protobuf for this method")

    @staticmethod
    async def _fail(method: str, context: Ctx, exc: Exception) -> None:
        if isinstance(exc, GatewayError):
            await context.abort_with_status(to_status(exc))  # type: ignore[attr-defined]
        log.error("unhandled error in %s", method, exc_info=exc)
        await context.abort_with_status(internal_status())  # type: ignore[attr-defined]

    def wrap_unary(self, method: str, behavior: Unary) -> Unary:
        async def run(request: Any, context: Ctx) -> Any:
            try:
                self._check(request)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one boundary
                await self._fail(method, context, exc)

        return run

    def wrap_stream(self, method: str, behavior: Streaming) -> Streaming:
        async def run(request: Any, context: Ctx) -> AsyncIterator[Any]:
            try:
                self._check(request)
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one boundary
                await self._fail(method, context, exc)

        return run


def server_interceptors(service: str) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The interceptor chain of every aigw server, outermost first."""
    return [RequestIdInterceptor(), AccessLogInterceptor(), MetricsInterceptor(service), ErrorMappingInterceptor()]
