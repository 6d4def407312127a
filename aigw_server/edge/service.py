"""Assembles the edge: descriptor set, upstream addresses from the config, the HTTP server and its metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import grpc
from prometheus_client import Gauge, start_http_server

from aigw_server.edge.console_files import ConsoleFiles
from aigw_server.edge.gateway import Dialer, Gateway, Resolver
from aigw_server.edge.protocol import HttpServer, Limits, Request, Responder
from aigw_server.runtime.authz import mesh_tls
from aigw_server.runtime.channels import CHANNEL_OPTIONS
from aigw_server.runtime.config import SERVICE_NAMES, ConfigError, GatewayConfig, ServiceName, load_config
from aigw_server.runtime.logs import setup_logging
from aigw_server.runtime.server import install_event_loop, run_profiled

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DESCRIPTOR_SET = REPO / "gen" / "aigw_descriptor.binpb"
# The router's OpenAI-compatible surface (/v1/chat/completions, /v1/models, /v1/requests): errors in OpenAI's shape.
OPENAI_PREFIX = "/v1/"
UPSTREAMS: dict[str, ServiceName] = {name: name for name in SERVICE_NAMES if name != "edge"}
"""The services the edge calls, by the name their gRPC package carries (`aigw.<name>.v1`)."""
CONNECTIONS = Gauge("aigw_edge_open_connections", "Open client connections of the edge")


def descriptor_set_path() -> Path:
    """`AIGW_DESCRIPTOR_SET` when set, otherwise the set `make proto` writes."""
    return Path(os.environ.get("AIGW_DESCRIPTOR_SET") or DEFAULT_DESCRIPTOR_SET)


def config_resolver(cfg: GatewayConfig) -> Resolver:
    """Maps a gRPC service to the configured address of its aigw service: `aigw.<svc>.v1.X` -> `services.<svc>`.

    With service identity on, that is the service's mTLS port (`mesh_port` for router and admin).
    """
    tls = cfg.mesh_tls.mode == "mtls"

    def resolve(service: str) -> str | None:
        parts = service.split(".")
        name = UPSTREAMS.get(parts[1]) if len(parts) >= 3 and parts[0] == "aigw" else None
        if name is None:
            return None
        endpoint = cfg.endpoint(name)
        return endpoint.mesh_address if tls else endpoint.address

    return resolve


def config_dialer(cfg: GatewayConfig) -> Dialer | None:
    """mTLS channels that present the edge's identity and expect the upstream's; None in a plaintext mesh."""
    tls = mesh_tls(cfg, "edge")
    if tls is None:
        return None
    identity_at = {cfg.endpoint(s).mesh_address: s for s in SERVICE_NAMES if s != "edge"}
    credentials = tls.channel_credentials()

    def dial(address: str) -> grpc.aio.Channel:
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", identity_at.get(address, "router"))]
        return grpc.aio.secure_channel(address, credentials, options=options)

    return dial


class Edge:
    """The gateway and the console's static files behind an HTTP server; `start` binds, `stop` drains."""

    def __init__(self, gateway: Gateway, limits: Limits, console: ConsoleFiles | None = None) -> None:
        self.gateway = gateway
        self.console = console if console is not None else ConsoleFiles()
        self.server = HttpServer(self.handle, limits)
        self.port = 0

    async def handle(self, request: Request, responder: Responder) -> None:
        """/ui/ is the console; every other path is the transcoded API."""
        if request.path.startswith("/ui") and self.console.claims(request.path):
            self.console.handle(request, responder)
        else:
            await self.gateway.handle(request, responder)

    async def start(self, host: str, port: int) -> int:
        self.port = await self.server.start(host, port)
        return self.port

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
        await self.gateway.close()


def build(cfg: GatewayConfig, descriptor_set: bytes | None = None) -> Edge:
    """The edge of the configured mesh, serving every annotated method of the descriptor set."""
    data = descriptor_set if descriptor_set is not None else descriptor_set_path().read_bytes()
    gateway = Gateway(data, config_resolver(cfg), OPENAI_PREFIX, config_dialer(cfg), cfg.server.trusted_proxies)
    return Edge(gateway, Limits(max_body_bytes=cfg.server.max_body_bytes, max_document_bytes=cfg.max_document_bytes))


async def run(cfg: GatewayConfig) -> None:
    """Serves until SIGTERM/SIGINT, then lets in-flight requests finish within the grace period."""
    edge = build(cfg)
    port = await edge.start(cfg.server.host, cfg.server.port)
    CONNECTIONS.set_function(lambda: len(edge.server.state.connections))
    if cfg.server.metrics_port:
        start_http_server(cfg.server.metrics_port, addr=cfg.server.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"port": port, "metrics_port": cfg.server.metrics_port, "routes": len(edge.gateway.routes)})
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": cfg.services.grace_seconds})
    await edge.stop(cfg.services.grace_seconds)
    log.info("stopped")


def main() -> None:
    try:
        cfg = load_config()
        mesh_tls(cfg, "edge")
    except ConfigError as exc:
        raise SystemExit(f"aigw edge: invalid configuration: {exc}") from None
    setup_logging("edge", cfg.logging.level, cfg.logging.json)
    install_event_loop()
    run_profiled("edge", lambda: run(cfg))
