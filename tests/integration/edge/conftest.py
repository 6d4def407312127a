"""The edge in process, in front of a real gRPC server running the test-only annotated service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import uvloop
from google.api import httpbody_pb2
from google.protobuf import duration_pb2, text_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigw_server.edge.gateway import Gateway
from aigw_server.edge.protocol import Limits
from aigw_server.edge.service import Edge
from aigw_server.runtime.config import ServiceName
from aigw_server.runtime.errors import InvalidArgument, Unavailable
from aigw_server.runtime.server import Health, create_server
from tests.protos.compile import SERVICE, EdgeTestProtos, compile_edgetest


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The edge runs on uvloop in production (`install_event_loop`), so its tests do too."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def edgetest(tmp_path_factory: pytest.TempPathFactory) -> EdgeTestProtos:
    return compile_edgetest(tmp_path_factory.mktemp("edgetest"))


class EdgeTestService:
    """The test service on the shared bootstrap (so domain errors map as in the mesh); it records what it saw."""

    name: ServiceName = "router"
    service_names: Sequence[str] = [SERVICE]

    def __init__(self, protos: EdgeTestProtos) -> None:
        self.protos = protos
        self.cancelled = asyncio.Event()
        self.servicer = _servicer(self, protos)

    def register(self, server: grpc.aio.Server) -> None:
        self.protos.pb2_grpc.add_EdgeTestServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


def _servicer(owner: EdgeTestService, protos: EdgeTestProtos) -> Any:
    pb2 = protos.pb2

    def seen(request: Any) -> str:
        return text_format.MessageToString(request, as_one_line=True)

    class Servicer(protos.pb2_grpc.EdgeTestServiceServicer):  # type: ignore[name-defined,misc]
        async def GetMessage(self, request: Any, context: Any) -> Any:
            return pb2.Message(message_id=request.message_id, received=seen(request), kind=request.kind, big=2**40)

        async def UpdateMessage(self, request: Any, context: Any) -> Any:
            return pb2.Message(message_id=request.message_id, text=request.message.text, received=seen(request))

        async def GetResource(self, request: Any, context: Any) -> Any:
            return pb2.Message(received=seen(request))

        async def InspectThing(self, request: Any, context: Any) -> Any:
            return pb2.Message(message_id=request.thing.id, text="inspect")

        async def GetThing(self, request: Any, context: Any) -> Any:
            return pb2.Message(message_id=request.thing.id, text="get")

        async def GetText(self, request: Any, context: Any) -> Any:
            return pb2.Message(text=f"text of {request.message_id}")

        async def EchoRaw(self, request: Any, context: Any) -> Any:
            return httpbody_pb2.HttpBody(content_type=request.content_type, data=request.data.upper())

        async def Upload(self, request: Any, context: Any) -> Any:
            upload = request.upload
            return pb2.UploadResponse(
                size=len(upload.data), content_type=upload.content_type, name=request.name, languages=request.languages
            )

        async def Count(self, request: Any, context: Any) -> AsyncIterator[Any]:
            async for i in _ticks(owner, request):
                yield pb2.CountResponse(index=i)

        async def Chunks(self, request: Any, context: Any) -> AsyncIterator[Any]:
            async for i in _ticks(owner, request):
                yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=b'data: {"i":%d}\n\n' % i)
            yield httpbody_pb2.HttpBody(data=b"data: [DONE]\n\n")

        async def Fail(self, request: Any, context: Any) -> Any:
            try:
                await asyncio.sleep(request.delay_seconds)
            except asyncio.CancelledError:
                owner.cancelled.set()
                raise
            if request.code == "CRASH":
                raise RuntimeError("secret internals: password=hunter2")
            if request.code == "PLAIN":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connect to 10.1.2.3:5432 refused")
            status = status_pb2.Status(code=code_pb2.Code.Value(request.code), message=request.message)
            if request.retry_after_seconds:
                seconds = request.retry_after_seconds
                delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
                status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            await context.abort_with_status(rpc_status.to_status(status))

        async def Headers(self, request: Any, context: Any) -> Any:
            merged: dict[str, str] = {}
            for key, value in context.invocation_metadata():
                if isinstance(value, str):
                    merged[key] = f"{merged[key]},{value}" if key in merged else value
            # The request id a service answers with: `x-answer-id-initial` sends one as a stream (or a router
            # from before unary answers sent theirs in trailing metadata) does, `x-answer-id-trailing` as the
            # router answers a unary call.
            initial = [("x-request-id", merged["x-answer-id-initial"])] if "x-answer-id-initial" in merged else []
            await context.send_initial_metadata((("x-served-by", "edgetest"), ("grpc-internal", "x"), *initial))
            if "x-answer-id-trailing" in merged:
                context.set_trailing_metadata((("x-request-id", merged["x-answer-id-trailing"]), ("x-trailing-only", "t")))
            return pb2.HeadersResponse(metadata=merged)

    return Servicer()


async def _ticks(owner: EdgeTestService, request: Any) -> AsyncIterator[int]:
    """1..count with the asked interval; UNAVAILABLE after `fail_after`; records a cancellation by the client."""
    if request.count < 0:
        raise InvalidArgument("count must not be negative", field="count")
    try:
        for i in range(1, request.count + 1):
            if i > 1 and request.interval_seconds:
                await asyncio.sleep(request.interval_seconds)
            yield i
            if request.fail_after and i == request.fail_after:
                raise Unavailable("the backend went away", retry_after=1)
    except asyncio.CancelledError:
        owner.cancelled.set()
        raise


@dataclass
class Running:
    """The running pair: gRPC server and edge, with an HTTP client bound to the edge."""

    service: EdgeTestService
    edge: Edge
    client: httpx.AsyncClient
    grpc_address: str

    @property
    def port(self) -> int:
        return self.edge.port


StartEdge = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_edge(edgetest: EdgeTestProtos) -> AsyncIterator[StartEdge]:
    """Starts the test gRPC server and an edge in front of it (limits and the upstream address can be chosen)."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(limits: Limits | None = None, upstream: str | None = None) -> Running:
        service = EdgeTestService(edgetest)
        server, port, health = await create_server(service, "127.0.0.1:0")
        await server.start()
        await service.start(health)
        address = upstream or f"127.0.0.1:{port}"
        gateway = Gateway(edgetest.descriptor_set, lambda name: address if name == SERVICE else None)
        edge = Edge(gateway, limits or Limits())
        await edge.start("127.0.0.1", 0)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}", timeout=10)

        async def cleanup() -> None:
            await client.aclose()
            await edge.stop(0)
            await server.stop(0)

        cleanups.append(cleanup)
        return Running(service, edge, client, address)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def running(start_edge: StartEdge) -> Running:
    return await start_edge()
