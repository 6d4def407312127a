"""Runs the whole local mesh through the launcher (supervisord) and observes it: for e2e tests, benchmarks and chaos runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.xmlrpc import SupervisorTransport

from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.config import ConfigError, GatewayConfig, ServiceName, load_config
from aigw_server.runtime.healthcheck import PROBE_IDENTITY, open_channel
from harness.ferretdb import socket_path

REPO = Path(__file__).resolve().parent.parent
FRONT_PROGRAMS: tuple[ServiceName, ...] = ("queue", "admin", "router")
"""The gRPC services the launcher runs once each, whatever the backends."""


def health_of(address: str, timeout: float = 1.0, tls: MeshTls | None = None, server: str = "") -> str:
    """The standard health check's overall answer at `address` (mTLS as `tls` to `server`), or UNREACHABLE."""
    with open_channel(address, tls, server) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return name


@dataclass
class Mesh:
    """A launcher (supervisord) process and the services it supervises."""

    config_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cfg(self) -> GatewayConfig:
        return load_config(self.config_path, env={**os.environ, **self.env})

    def identity(self, name: str = PROBE_IDENTITY) -> MeshTls | None:
        """The credentials of one identity of the mesh (None when it runs in plaintext)."""
        cfg = self.cfg
        return None if cfg.mesh_tls.mode == "plaintext" else MeshTls.load(cfg.tls_path.resolve(), name)

    def open(self, program: str, identity: str = PROBE_IDENTITY) -> grpc.Channel:
        """A blocking channel to a supervised program: router and admin on their public port, the
        others on their mTLS port presenting `identity` (a test or tool acting as that service)."""
        address = self.grpc_addresses()[program]
        kind = program.split("-", 1)[0]
        if kind in ("router", "admin"):
            return grpc.insecure_channel(address)
        return open_channel(address, self.identity(identity), kind)

    def health(self, program: str, address: str, timeout: float = 1.0) -> str:
        """`health_of` for a supervised program: its mTLS port with the probe identity where it has one."""
        kind = program.split("-", 1)[0]
        if kind in ("router", "admin"):
            return health_of(address, timeout)
        try:
            tls = self.identity()
        except ConfigError:  # the launcher has not made the mesh's identities yet
            return "UNREACHABLE"
        return health_of(address, timeout, tls, kind)

    def grpc_addresses(self) -> dict[str, str]:
        """Program name → gRPC address of every supervised gRPC service."""
        cfg = self.cfg
        out: dict[str, str] = {svc: cfg.endpoint(svc).address for svc in FRONT_PROGRAMS}
        for b in cfg.backends:
            out[f"{b.kind}-{b.name}"] = b.address or cfg.endpoint(b.kind).address
        return out

    @property
    def edge_url(self) -> str:
        cfg = self.cfg
        return f"http://{cfg.server.host}:{cfg.server.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Starts the launcher and waits until every service is SERVING and the edge answers; returns seconds taken."""
        begin = time.monotonic()
        Path(self.cfg.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        out = os.open(Path(self.cfg.data_dir) / "launcher.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = os.fdopen(out, "ab")
        env = {**os.environ, **self.env, "AIGW_CONFIG": str(self.config_path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.launcher"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout - (time.monotonic() - begin))
        return time.monotonic() - begin

    def wait_ready(self, timeout: float) -> None:
        """Waits until every gRPC service says SERVING and the edge's /health answers 200."""
        deadline = time.monotonic() + timeout
        pending = dict(self.grpc_addresses())
        while pending and time.monotonic() < deadline:
            self._check_alive()
            pending = {n: a for n, a in pending.items() if self.health(n, a) != "SERVING"}
            if pending:
                time.sleep(0.3)
        if pending:
            raise TimeoutError(f"not SERVING after {timeout:.0f}s: {sorted(pending)}")
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.edge_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("the edge's /health did not answer 200")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (Path(self.cfg.data_dir) / "launcher.out").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the launcher exited with {self.proc.returncode}:\n{tail}")

    def supervisor(self) -> Any:  # Any: an XML-RPC proxy's methods and answers are untyped (resolved remotely)
        """An XML-RPC proxy to supervisord; use it in a `with` block, which closes its connection."""
        sock = Path(self.cfg.data_dir).resolve() / "supervisor.sock"
        transport = SupervisorTransport(None, None, f"unix://{sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def pids(self) -> dict[str, int]:
        """Program name → pid of every running supervised process."""
        with self.supervisor() as proxy:
            return {p["name"]: p["pid"] for p in proxy.supervisor.getAllProcessInfo() if p["pid"]}

    def kill(self, program: str, sig: int = signal.SIGKILL) -> int:
        """Sends `sig` to one supervised program's process; returns its pid."""
        pid = self.pids()[program]
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, program: str, old_pid: int, timeout: float = 60.0) -> float:
        """Waits until `program` runs under a new pid and (for gRPC services) is SERVING; returns seconds taken."""
        begin = time.monotonic()
        address = self.grpc_addresses().get(program)
        while time.monotonic() - begin < timeout:
            pid = self.pids().get(program)
            if pid and pid != old_pid and self._answers(program, address):
                return time.monotonic() - begin
            time.sleep(0.2)
        raise TimeoutError(f"{program} did not come back within {timeout:.0f}s")

    def _answers(self, program: str, address: str | None) -> bool:
        if address is not None:
            return self.health(program, address) == "SERVING"
        if program == "ferretdb":
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1)
                    sock.connect(str(socket_path(self.cfg.data_path)))
                    return True
            except OSError:
                return False
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the launcher (supervisord stops every program), then waits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
