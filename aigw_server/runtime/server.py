"""Server bootstrap shared by every service: interceptors, health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import cProfile
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from aigw_server.runtime.authz import MeshTls, mesh_tls
from aigw_server.runtime.channels import CHANNEL_OPTIONS
from aigw_server.runtime.config import ConfigError, GatewayConfig, ServiceName, load_config
from aigw_server.runtime.interceptors import server_interceptors
from aigw_server.runtime.logs import setup_logging
from aigw_server.runtime.reflection import enable_reflection

log = logging.getLogger(__name__)

SERVER_OPTIONS = [
    *[o for o in CHANNEL_OPTIONS if not o[0].startswith(("grpc.keepalive_time", "grpc.lb_policy"))],
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


class Health:
    """The standard health service of one server: overall ("") and per gRPC service."""

    def __init__(self, service_names: Sequence[str]) -> None:
        # grpc-stubs declare no grpc_health.v1.health.aio; the module is grpcio-health-checking's own.
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.service_names = list(service_names)

    async def set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.servicer.set(name, status)

    async def shutdown(self) -> None:
        """NOT_SERVING for good: a later `set` (a background loop seeing its dependencies well) changes nothing."""
        await self.servicer.enter_graceful_shutdown()


class Service(Protocol):
    """What a service hands to the bootstrap."""

    @property
    def name(self) -> ServiceName:
        """Which service this is (selects its endpoint in the config)."""

    @property
    def service_names(self) -> Sequence[str]:
        """Full names of the gRPC services it serves (for health and reflection)."""

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the servicers to the server."""

    async def start(self, health: Health) -> None:
        """Starts background work; decides when health becomes SERVING (default: at once)."""

    async def stop(self) -> None:
        """Stops background work and closes clients."""


PUBLIC_SERVICES = frozenset({"router", "admin"})
"""Services whose `port` is public (users authenticate by JWT or API key); they take mesh calls on `mesh_port`."""


async def create_server(
    service: Service, address: str, tls: MeshTls | None = None, mesh_address: str = ""
) -> tuple[grpc.aio.Server, int, Health]:
    """Builds a server with interceptors, health and reflection, bound to `address` (port 0 picks one).

    Without `tls` the server is plaintext and authorises nothing (allowed on loopback only). With it,
    every call is checked against `aigw_server.runtime.authz.POLICY`: `address` then requires a client
    certificate, unless `mesh_address` is given, in which case `address` is the public port (no
    certificate asked) and `mesh_address` the mTLS one.
    """
    server = grpc.aio.server(interceptors=server_interceptors(service.name, tls is not None), options=SERVER_OPTIONS)
    service.register(server)
    status = Health(service.service_names)
    health_pb2_grpc.add_HealthServicer_to_server(status.servicer, server)
    enable_reflection([*service.service_names, health.SERVICE_NAME], server)
    if tls is None or mesh_address:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    if port == 0:
        raise OSError(f"cannot bind {address}")
    if tls is not None and mesh_address and server.add_secure_port(mesh_address, tls.server_credentials()) == 0:
        raise OSError(f"cannot bind {mesh_address}")
    return server, port, status


async def run_until_signalled(service: Service, cfg: GatewayConfig, address: str | None = None) -> None:
    """Serves until SIGTERM/SIGINT, then flips health to NOT_SERVING and lets in-flight RPCs finish."""
    endpoint = cfg.endpoint(service.name)
    tls = mesh_tls(cfg, service.name)
    if tls is None:
        log.warning("mesh TLS is off (mesh_tls.mode: plaintext): internal calls carry no service identity")
    mesh_address = ""
    if service.name in PUBLIC_SERVICES and tls is not None:
        if not endpoint.mesh_port:
            raise ConfigError(f"services.{service.name}.mesh_port: required with mesh_tls.mode mtls (the edge calls it)")
        mesh_address = endpoint.mesh_address
    server, port, status = await create_server(service, address or endpoint.address, tls, mesh_address)
    # A service with several instances (one textgen per backend) may name its own metrics port (0: none).
    metrics_port: int = getattr(service, "metrics_port", endpoint.metrics_port)
    if metrics_port:
        start_http_server(metrics_port, addr=endpoint.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await service.start(status)
    log.info("serving", extra={"port": port, "metrics_port": metrics_port})
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": cfg.services.grace_seconds})
    await status.shutdown()
    draining = getattr(service, "draining", None)
    if callable(draining):  # calls still open when the grace ends are cut by the stop, not by their clients
        draining()
    await server.stop(cfg.services.grace_seconds)
    await service.stop()
    log.info("stopped")


def install_event_loop() -> None:
    """Uses uvloop where available (measurably faster for many small RPCs)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(name: ServiceName, build: Callable[[GatewayConfig], Service]) -> None:
    """Entry point of a service process: load config, set up logs, build the service, serve."""
    try:
        cfg = load_config()
        mesh_tls(cfg, name)  # fails at once, naming the missing file, when the identity is not there
    except ConfigError as exc:
        raise SystemExit(f"aigw {name}: invalid configuration: {exc}") from None
    setup_logging(name, cfg.logging.level, cfg.logging.json)
    install_event_loop()

    async def main() -> None:
        service = build(cfg)
        # A service may bind an address of its own (a textgen backend's `address`) instead of its section's.
        await run_until_signalled(service, cfg, getattr(service, "bind_address", None))

    run_profiled(name, main)


def run_profiled(name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """`asyncio.run(main())`; with AIGW_PROFILE_DIR set, under cProfile, written there as `<name>-<pid>.prof`
    when the process stops gracefully (a developer aid, see docs/performance.md)."""
    profile_dir = os.environ.get("AIGW_PROFILE_DIR", "")
    if not profile_dir:
        asyncio.run(main())
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(main())
    finally:
        profiler.disable()
        profiler.dump_stats(os.path.join(profile_dir, f"{name}-{os.getpid()}.prof"))
