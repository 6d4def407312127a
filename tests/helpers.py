"""Shared test helpers: free ports, in-process servers, health probes."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_common import ferretdb

__all__ = ["free_port", "health_status", "wait_serving"]


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
