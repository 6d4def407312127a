"""The shared server bootstrap on a tiny test-only service: error mapping, request ids, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import ServiceName
from aigw_server.runtime.errors import ResourceExhausted
from aigw_server.runtime.logs import request_id_var
from aigw_server.runtime.rpc_errors import INTERNAL_MESSAGE
from aigw_server.runtime.server import Health, create_server

SERVICE = "aigw.test.v1.EchoService"


def _identity(b: bytes) -> bytes:
    return b


class EchoService:
    """A service with raw-bytes methods exercising every path of the interceptors."""

    name: ServiceName = "router"
    service_names: Sequence[str] = [SERVICE]

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, request: bytes, context: Any) -> bytes:
        if request == b"full":
            raise ResourceExhausted("queue full", retry_after=2.5)
        if request == b"boom":
            raise RuntimeError("secret internals: password=hunter2")
        if request == b"rid":
            return request_id_var.get().encode()
        if request == b"slow":
            await self.release.wait()
        return request

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"{i}".encode()
        if request == b"full":
            raise ResourceExhausted("stream quota", retry_after=1)

    def register(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo, _identity, _identity),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream, _identity, _identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


@pytest.fixture
async def running() -> AsyncIterator[tuple[EchoService, grpc.aio.Server, grpc.aio.Channel, Health]]:
    svc = EchoService()
    server, port, health = await create_server(svc, "127.0.0.1:0")
    await server.start()
    await svc.start(health)
    channel = make_channel(f"127.0.0.1:{port}")
    yield svc, server, channel, health
    await channel.close(None)
    await server.stop(0)


def unary(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(f"/{SERVICE}/Echo", request_serializer=_identity, response_deserializer=_identity)


async def test_domain_error_becomes_status_with_retry_info(running: Any) -> None:
    _, _, channel, _ = running
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unary(channel)(b"full")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "queue full"
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 2
    assert retry.retry_delay.nanos == 500_000_000


async def test_unexpected_error_is_generic_internal(running: Any) -> None:
    _, _, channel, _ = running
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unary(channel)(b"boom")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == INTERNAL_MESSAGE
    assert "hunter2" not in (info.value.debug_error_string() or "")


async def test_streaming_errors_are_mapped_after_items(running: Any) -> None:
    _, _, channel, _ = running
    call = channel.unary_stream(f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity)(b"full")
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for item in call:
            got.append(item)
    assert got == [b"0", b"1", b"2"]
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_request_id_travels_in_metadata(running: Any) -> None:
    _, _, channel, _ = running
    token = request_id_var.set("req-123")
    try:
        assert await unary(channel)(b"rid") == b"req-123"
    finally:
        request_id_var.reset(token)
    generated = await unary(channel)(b"rid")
    assert len(generated) == 32


async def test_health_and_reflection(running: Any) -> None:
    _, _, channel, health = running
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await health.set(False)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for answer in refl.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_graceful_stop_lets_in_flight_calls_finish(running: Any) -> None:
    svc, server, channel, _ = running
    call = asyncio.ensure_future(unary(channel)(b"slow"))
    await asyncio.sleep(0.1)
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.1)
    svc.release.set()
    assert await call == b"slow"
    await stopping


async def test_unparsable_request_is_invalid_argument(running: Any) -> None:
    _, _, channel, _ = running
    call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=_identity, response_deserializer=_identity)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"\xff\xff\xff\xff garbage")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (info.value.details() or "")


async def test_large_metadata_reaches_the_service(running: Any) -> None:
    _, _, channel, _ = running
    assert await unary(channel)(b"ok", metadata=(("authorization", "Bearer " + "a" * 40_000),)) == b"ok"


def _rpc_count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("aigw_rpc_requests_total", {"service": "router", "method": method, "code": code}) or 0.0


async def test_every_call_is_counted_by_method_and_code_and_logged_when_not_ok(
    running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The interceptor keeps one wrapped handler per method: repeated calls still count, log and map each on its own."""
    _, _, channel, _ = running
    ok, full, streams = _rpc_count("Echo", "OK"), _rpc_count("Echo", "RESOURCE_EXHAUSTED"), _rpc_count("Stream", "OK")
    caplog.set_level(logging.INFO, logger="aigw.rpc")
    for _ in range(3):
        assert await unary(channel)(b"hello") == b"hello"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(channel)(b"full")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stream = channel.unary_stream(f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity)
    assert [item async for item in stream(b"x")] == [b"0", b"1", b"2"]
    assert _rpc_count("Echo", "OK") == ok + 3
    assert _rpc_count("Echo", "RESOURCE_EXHAUSTED") == full + 3
    assert _rpc_count("Stream", "OK") == streams + 1
    refused = [r for r in caplog.records if r.name == "aigw.rpc" and getattr(r, "code", "") == "RESOURCE_EXHAUSTED"]
    assert len(refused) == 3
    assert all(getattr(r, "method", "") == f"/{SERVICE}/Echo" for r in refused)
