"""Shared test helpers: free ports, in-process servers, health probes."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import ferretdb

__all__ = ["connect_as_other_user", "free_port", "health_status", "tcp_listeners", "wait_serving"]


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port that no earlier call in this test process returned.

    The kernel may hand out a port it gave a moment ago once that socket is closed, so two ports
    chosen one after the other for the same config can be equal; remembering them rules that out.
    """
    with _HANDED_OUT_LOCK:
        while True:
            port = ferretdb.free_port(host)
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def health_status(address: str, service: str = "", timeout: float = 2.0) -> str:
    """The standard health check's answer for `service` at `address`, or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return name


def wait_serving(address: str, timeout: float, service: str = "") -> None:
    """Waits until the health check says SERVING, or fails with the last answer."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = health_status(address, service)
        if last == "SERVING":
            return
        time.sleep(0.2)
    raise AssertionError(f"{address} not SERVING after {timeout}s (last: {last})")


def tcp_listeners(pid: int) -> list[str]:
    """The TCP (v4 and v6) sockets process `pid` listens on, as the kernel's local addresses (hex)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(fields[1])
    return found


def connect_as_other_user(path: Path, uid: int = 65534) -> str:
    """Connects to the Unix socket `path` from a child running as another user (root only); the outcome."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drops to `uid`, tries, reports, exits without running any cleanup
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(path))
            outcome = "connected"
        except OSError as exc:
            outcome = f"refused: {exc.strerror}"
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(child, 0)
    return outcome
