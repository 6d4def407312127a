"""The router's test mesh: bench.upstream processes, textgen/OCR/queue/router servers in process, credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import httpx
import jwt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw.router.v1 import router_pb2_grpc
from aigw_server.edge.service import build as build_edge
from aigw_server.ocr.service import build as build_ocr
from aigw_server.queue.service import build as build_queue
from aigw_server.router.service import RouterService
from aigw_server.runtime.auth import TokenSigner
from aigw_server.runtime.config import Endpoint, GatewayConfig, parse_config
from aigw_server.runtime.server import Service, create_server
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from harness.mesh_config import Section
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[3]
SECRET = "router-integration-secret-" + "r" * 40
MODEL = "chat-a"
OCR_MODEL = "tess"
READY_SECONDS = 20.0


@dataclass
class Upstream:
    """A bench.upstream process (a fast OpenAI-compatible server) on a free port."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        reply: dict[str, int] = httpx.get(f"{self.url}/stats", timeout=5).json()
        return reply

    def gone(self) -> dict[str, float]:
        """Request id → when (wall clock) the upstream saw that request's client connection close."""
        gone: dict[str, float] = httpx.get(f"{self.url}/stats", timeout=5).json()["gone"]
        return gone

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as a crashed model server does."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_upstream(*options: str) -> Upstream:
    """Starts `python -m bench.upstream` with `options` and waits for its /health."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(port), *options], cwd=REPO)
    up = Upstream(proc, port)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{up.url}/health", timeout=1).status_code == 200:
                return up
        time.sleep(0.05)
    up.stop()
    raise AssertionError(f"bench.upstream on {port} did not start")


@contextlib.contextmanager
def upstreams(*option_sets: tuple[str, ...]) -> Iterator[list[Upstream]]:
    """Several upstreams, stopped at the end."""
    started: list[Upstream] = []
    try:
        for options in option_sets:
            started.append(start_upstream(*options))
        yield started
    finally:
        for up in started:
            up.stop()


def textgen_backend(name: str, upstream: Upstream, capacity: int = 8) -> Section:
    """A textgen backend attached to `upstream`, serving MODEL."""
    return {
        "name": name,
        "kind": "textgen",
        "address": f"127.0.0.1:{free_port()}",
        "engine": "openai",
        "mode": "attach",
        "url": upstream.url,
        "models": [MODEL],
        "initial_model": MODEL,
        "capacity": capacity,
    }


def ocr_backend() -> Section:
    """A Tesseract OCR backend serving OCR_MODEL."""
    return {
        "name": "tess-0",
        "kind": "ocr",
        "address": f"127.0.0.1:{free_port()}",
        "engine": "tesseract",
        "models": [OCR_MODEL],
        "initial_model": OCR_MODEL,
        "capacity": 2,
        "workers": 1,
    }


def mesh_config(ferretdb_uri: str, db_name: str, data_dir: Path, backends: list[Section], **sections: Section) -> GatewayConfig:
    """A config on the test's own database; `sections` replace or extend sections."""
    raw: Section = {
        "data_dir": str(data_dir),
        "mesh_tls": {"mode": "plaintext"},  # in-process services on loopback: no service identity
        "database": {"uri": ferretdb_uri, "name": db_name},
        "services": {
            "queue": {"port": free_port(), "metrics_port": 0},
            "admin": {"port": free_port(), "metrics_port": 0},  # the router checks admin's health there
            **{name: {"port": 0, "metrics_port": 0} for name in ("textgen", "ocr", "router")},
        },
        "auth": {"jwt_secret": SECRET},
        "queue": {"lease_ttl_seconds": 1.5, "orphan_grace_seconds": 1.0, "sweep_interval_seconds": 0.2},
        "routing": {"status_interval_seconds": 0.2, "down_retry_seconds": 30, "workers": 2},
        "rate_limit": {"default": {"requests_per_minute": 60_000, "burst": 1000}},
        "logging": {"level": "WARNING"},
        "models": {
            MODEL: {"kind": "chat", "max_concurrent": 16, "max_waiting": 100, "default_max_tokens": 32},
            "chat-off": {"kind": "chat", "enabled": False},
            "chat-unserved": {"kind": "chat"},
            OCR_MODEL: {"kind": "ocr", "max_concurrent": 2, "languages": ["eng"]},
        },
        "backends": backends,
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return parse_config(raw, env={})


class QueueProcess:
    """The queue service of a test mesh, which a test can stop and start again on the same address."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.running: contextlib.AbstractAsyncContextManager[None] | None = None

    async def start(self) -> None:
        self.running = serving(build_queue(self.cfg), self.cfg.services.queue.address)
        await self.running.__aenter__()

    async def stop(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            await running.__aexit__(None, None, None)


@dataclass
class Mesh:
    """The running servers of one test and asyncio stubs of the router and the queue's services."""

    cfg: GatewayConfig
    router_service: RouterService
    router: router_pb2_grpc.RouterServiceAsyncStub
    jobs: queue_pb2_grpc.QueueServiceAsyncStub
    identity: queue_pb2_grpc.IdentityServiceAsyncStub
    configs: queue_pb2_grpc.ModelConfigServiceAsyncStub
    queue: QueueProcess
    router_address: str = ""

    def token(self, subject: str = "alice", role: str = "user", client_ids: tuple[str, ...] = ()) -> str:
        token, _ = TokenSigner(self.cfg.auth, SECRET).issue_access(subject, role, client_ids)
        return token


def bearer(token: str, **headers: str) -> tuple[tuple[str, str], ...]:
    """Call metadata with a bearer credential and `headers` (underscores become dashes)."""
    return (("authorization", f"Bearer {token}"), *((k.replace("_", "-"), v) for k, v in headers.items()))


def forged(**claims: object) -> str:
    """An HS256 token with the standard valid claims, changed by `claims` (None removes one)."""
    now = int(time.time())
    base = {
        "sub": "alice",
        "role": "user",
        "iss": "aigw",
        "aud": "aigw",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "typ": "access",
        **claims,
    }
    return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET, algorithm="HS256")


@contextlib.asynccontextmanager
async def serving(service: Service, address: str, until_serving: bool = True) -> AsyncIterator[None]:
    """Runs `service` at `address` until the block ends; ready once its health check says SERVING.

    `until_serving=False` enters the block once the service has started: the router's health is the
    mesh's readiness, which also needs an admin service that most test meshes do not run.
    """
    server, _, health = await create_server(service, address)
    await server.start()
    await service.start(health)
    try:
        if until_serving:
            await wait_health(address, "SERVING", what=service.name)
        yield
    finally:
        await server.stop(0)
        await service.stop()


async def wait_health(address: str, wanted: str, service: str = "", timeout: float = READY_SECONDS, what: str = "") -> None:
    """Waits until the standard health check at `address` (of `service`, "" overall) says `wanted`."""
    async with grpc.aio.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        deadline = time.monotonic() + timeout
        while True:
            reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            if health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status) == wanted:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or address} {service} not {wanted} within {timeout}s")
            await asyncio.sleep(0.05)


async def wait_until(condition: Callable[[], object], timeout: float = READY_SECONDS, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


USERS = ("alice", "bob", "calm", "flood", "mallory", "root")
"""Token subjects the tests use; they exist (tokens naming no user are refused), as admins so that a
token's own role is what counts."""


async def create_users(queue_address: str, names: tuple[str, ...]) -> None:
    async with grpc.aio.insecure_channel(queue_address) as channel:
        identity = queue_pb2_grpc.IdentityServiceStub(channel)
        for name in names:
            user = queue_pb2.User(username=name, role="admin", password_hash="unused")
            await identity.CreateUser(queue_pb2.CreateUserRequest(user=user))


@contextlib.asynccontextmanager
async def running_mesh(cfg: GatewayConfig) -> AsyncIterator[Mesh]:
    """Queue, every backend of `cfg` and a router, in process; ready when the router sees every backend's model."""
    async with contextlib.AsyncExitStack() as stack:
        queue = QueueProcess(cfg)
        await queue.start()
        stack.push_async_callback(queue.stop)
        await create_users(cfg.services.queue.address, USERS)
        for backend in cfg.backends:
            service: Service = (
                build_textgen(cfg, {**os.environ, "AIGW_BACKEND": backend.name})
                if backend.kind == "textgen"
                else build_ocr(cfg, backend.name)
            )
            await stack.enter_async_context(serving(service, backend.address))
        router = RouterService(cfg)
        port = free_port()
        await stack.enter_async_context(serving(router, f"127.0.0.1:{port}", until_serving=False))
        wanted = {m for b in cfg.backends for m in b.models}
        await wait_until(lambda: router.pool.servable_models() >= wanted, what="backends ready")
        router_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        queue_channel = grpc.aio.insecure_channel(cfg.services.queue.address)
        stack.push_async_callback(router_channel.close, None)
        stack.push_async_callback(queue_channel.close, None)
        yield Mesh(
            cfg,
            router,
            router_pb2_grpc.RouterServiceStub(router_channel),
            queue_pb2_grpc.QueueServiceStub(queue_channel),
            queue_pb2_grpc.IdentityServiceStub(queue_channel),
            queue_pb2_grpc.ModelConfigServiceStub(queue_channel),
            queue,
            f"127.0.0.1:{port}",
        )


def own_database() -> str:
    """A database name no other test mesh uses, so that each sees only its own jobs and users."""
    return f"t_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def mesh_on(ferretdb: FerretDBProcess, data_dir: Path, backends: list[Section], **sections: Section) -> AsyncIterator[Mesh]:
    """`running_mesh` of `mesh_config` on a database of its own in `ferretdb` (`sections` as `mesh_config` takes them)."""
    async with running_mesh(mesh_config(ferretdb.uri, own_database(), data_dir, backends, **sections)) as mesh:
        yield mesh


@contextlib.asynccontextmanager
async def edge_before(mesh: Mesh) -> AsyncIterator[int]:
    """The embedded REST edge in process in front of `mesh`'s router, on a free port, which it yields."""
    host, port = mesh.router_address.rsplit(":", 1)
    edge = build_edge(replace(mesh.cfg, services=replace(mesh.cfg.services, router=Endpoint(host, int(port)))))
    edge_port = await edge.start("127.0.0.1", 0)
    try:
        yield edge_port
    finally:
        await edge.stop(0)
