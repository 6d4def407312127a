"""GetEngines over mTLS, tried as an attacker: only the router's identity learns an engine's URL and key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import parse_config
from aigw_server.runtime.pki import ensure_mesh_pki
from aigw_server.runtime.server import create_server
from aigw_server.textgen.service import TextgenService
from aigw_server.textgen.settings import resolve_settings
from tests.helpers import free_port
from tests.integration.router.harness import upstreams, wait_until

pytestmark = pytest.mark.timeout(60)
KEY_VAR = "AIGW_TEST_ATTACHED_KEY"


@dataclass
class SecureTextgen:
    address: str
    pki: Path
    key: str

    def stub(self, identity: str) -> tuple[grpc.aio.Channel, backend_pb2_grpc.BackendServiceAsyncStub]:
        channel = make_channel(self.address, MeshTls.load(self.pki, identity), "textgen")
        return channel, backend_pb2_grpc.BackendServiceStub(channel)


@pytest.fixture
async def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SecureTextgen]:
    pki = ensure_mesh_pki(tmp_path / "pki")
    key = "k-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_VAR, key)  # the upstream's (a keyed vLLM's) own copy
    with upstreams(("--api-key-env", KEY_VAR)) as (up,):
        raw = {
            "services": {"textgen": {"metrics_port": 0}, "queue": {"port": free_port(), "metrics_port": 0}},
            "models": {"chat-a": {"kind": "chat"}},
            "backends": [
                {"name": "tg", "kind": "textgen", "engine": "openai", "mode": "attach", "url": up.url}
                | {"api_key_env": KEY_VAR, "models": ["chat-a"]}
            ],
        }
        settings = resolve_settings(parse_config(raw, env={}), {KEY_VAR: key})
        service = TextgenService(settings, tls=MeshTls.load(pki, "textgen"))
        server, port, health = await create_server(service, "127.0.0.1:0", MeshTls.load(pki, "textgen"))
        await server.start()
        await service.start(health)
        try:
            await wait_until(lambda: bool(service.backend.engines()), timeout=10, what="the engine is ready")
            yield SecureTextgen(f"127.0.0.1:{port}", pki, key)
        finally:
            await server.stop(0)
            await service.stop()


@pytest.mark.parametrize("identity", ["admin", "edge", "queue", "ocr", "probe"])
async def test_no_identity_but_the_router_reads_the_engines(secure: SecureTextgen, identity: str) -> None:
    channel, stub = secure.stub(identity)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetEngines(backend_pb2.GetEnginesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        if identity == "admin":
            status = await stub.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)
            assert secure.key not in str(status)


async def test_the_router_gets_the_engine_and_its_key(secure: SecureTextgen) -> None:
    channel, stub = secure.stub("router")
    async with channel:
        reply = await stub.GetEngines(backend_pb2.GetEnginesRequest(), timeout=5)
    [engine] = reply.engines
    assert engine.api_key == secure.key
    assert engine.engine == "openai"
    assert [(m.model, m.served_name) for m in engine.models] == [("chat-a", "chat-a")]


async def test_a_caller_without_a_certificate_cannot_connect(secure: SecureTextgen) -> None:
    async with grpc.aio.insecure_channel(secure.address) as plain:
        stub = backend_pb2_grpc.BackendServiceStub(plain)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetEngines(backend_pb2.GetEnginesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
