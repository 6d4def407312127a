"""Server reflection as grpcurl uses it: services, messages and method symbols all resolve to their file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from aigw.router.v1 import router_pb2
from aigw_server.runtime.config import ServiceName
from aigw_server.runtime.server import Health, create_server

ROUTER = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterNames:
    """A service that serves nothing but announces the router's name, so reflection describes it."""

    name: ServiceName = "router"
    service_names: Sequence[str] = [ROUTER]

    def register(self, server: grpc.aio.Server) -> None:
        return None

    async def start(self, health: Health) -> None:
        await health.set(True)

    async def stop(self) -> None:
        return None


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server, port, _ = await create_server(RouterNames(), "127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def files_of(address: str, symbols: list[str]) -> list[str]:
    """What `grpcurl describe <symbol>` asks first: the file containing each symbol (blocking client)."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        return [database.FindFileContainingSymbol(symbol).name for symbol in symbols]


def method_of(address: str, symbol: str) -> str:
    """The method's input type, resolved through a descriptor pool fed only by reflection."""
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        return str(pool.FindMethodByName(symbol).input_type.full_name)


async def test_method_symbols_resolve_like_services_and_messages(address: str) -> None:
    symbols = [ROUTER, f"{ROUTER}.Chat", f"{ROUTER}.StreamOcr", "aigw.router.v1.ChatRequest"]
    files = await asyncio.to_thread(files_of, address, symbols)
    assert files == ["aigw/router/v1/router.proto"] * 4
    assert await asyncio.to_thread(method_of, address, f"{ROUTER}.Chat") == "aigw.router.v1.ChatRequest"


async def test_an_unknown_method_is_still_not_found(address: str) -> None:
    with pytest.raises(KeyError):
        await asyncio.to_thread(files_of, address, [f"{ROUTER}.NoSuchMethod"])
