"""The queue's durable job cycle through the real gRPC service on the embedded FerretDB: cycles per second.

`python -m bench.queue_bench` starts a private FerretDB and `python -m aigw_server.queue`, then drives the
cycle a router drives for each request (Submit -> AcquireJob -> CompleteJob, every step acknowledged
by the store): one client at a time (latency and cycles/s), and with concurrent clients (cycles/s). It
prints one JSON document. Nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.healthcheck import check
from aigw_server.runtime.pki import ensure_mesh_pki
from aigw_server.runtime.server import install_event_loop
from harness.ferretdb import FerretDBProcess, ensure_built, free_port

REPO = Path(__file__).resolve().parent.parent
MODEL = "bench-chat"
CHAT = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="Say hello.")])
RESULT = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="Hello!"), finish_reason="stop")
if TYPE_CHECKING:
    from aigw.queue.v1.queue_pb2_grpc import QueueServiceAsyncStub as Stub


def queue_config(uri: str, port: int, tls_dir: Path | None = None) -> dict[str, Any]:
    """The queue alone; with `tls_dir` its port requires mTLS (the mesh's default), else plaintext on loopback."""
    return {
        "mesh_tls": {"mode": "mtls", "dir": str(tls_dir)} if tls_dir else {"mode": "plaintext"},
        "database": {"uri": uri, "name": "bench"},
        "services": {"queue": {"port": port, "metrics_port": 0}},
        "queue": {"max_waiting": 1000},
        "models": {MODEL: {"kind": "chat", "max_concurrent": 100}},
        "logging": {"level": "WARNING"},
    }


async def owner_cycle(stub: Stub, worker: str) -> None:
    """A synchronous request: submit as its owner, take the grant with AcquireJob, store the result."""
    job = (await stub.Submit(queue_pb2.SubmitRequest(model=MODEL, chat=CHAT, owner_id=worker))).job
    lease = (await stub.AcquireJob(queue_pb2.AcquireJobRequest(worker_id=worker, request_id=job.request_id, wait_ms=5000))).lease
    await stub.CompleteJob(queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=job.request_id, chat_result=RESULT))


async def owner_cycle_with_lease(stub: Stub, worker: str) -> None:
    """The same, taking the lease with the Submit answer (accept_lease): one round trip less."""
    sub = await stub.Submit(queue_pb2.SubmitRequest(model=MODEL, chat=CHAT, owner_id=worker, accept_lease=True))
    lease = sub.lease
    if not sub.HasField("lease"):
        lease = (await stub.AcquireJob(queue_pb2.AcquireJobRequest(worker_id=worker, request_id=sub.job.request_id))).lease
    await stub.CompleteJob(queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, chat_result=RESULT))


async def async_cycle(stub: Stub, worker: str) -> None:
    """An asynchronous request: submitted without owner, taken by a background worker."""
    await stub.Submit(queue_pb2.SubmitRequest(model=MODEL, chat=CHAT))
    lease = (await stub.AcquireJob(queue_pb2.AcquireJobRequest(worker_id=worker, models=[MODEL], wait_ms=5000))).lease
    await stub.CompleteJob(queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, chat_result=RESULT))


def summary(samples: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "cycles": len(samples),
        "cycles_per_second": round(len(samples) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
    }


async def sequential(stub: Stub, cycle: Callable[[Stub, str], Awaitable[None]], count: int) -> dict[str, float]:
    for _ in range(20):
        await cycle(stub, "warm-up")
    samples = []
    started = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        await cycle(stub, "bench-worker")
        samples.append(time.perf_counter() - t)
    return summary(samples, time.perf_counter() - started)


async def concurrent(stub: Stub, clients: int, seconds: float) -> dict[str, float]:
    samples: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await owner_cycle(stub, f"bench-worker-{i}")
            samples.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"clients": clients, **summary(samples, time.perf_counter() - started)}


async def measure(address: str, count: int, clients: int, seconds: float, tls_dir: Path | None = None) -> dict[str, Any]:
    tls = MeshTls.load(tls_dir, "router") if tls_dir else None
    async with make_channel(address, tls, "queue") as channel:
        stub = queue_pb2_grpc.QueueServiceStub(channel)
        return {
            "owner_cycle_sequential": await sequential(stub, owner_cycle, count),
            "owner_cycle_with_lease_sequential": await sequential(stub, owner_cycle_with_lease, count),
            "async_cycle_sequential": await sequential(stub, async_cycle, count),
            "owner_cycle_concurrent": await concurrent(stub, clients, seconds),
        }


def wait_ready(address: str, tls_dir: Path | None, timeout: float = 60) -> None:
    """Waits until the queue's health check (with the probe identity under mTLS) says SERVING."""
    tls = MeshTls.load(tls_dir, "probe") if tls_dir else None
    deadline = time.monotonic() + timeout
    while check(address, tls=tls, server="queue") != "SERVING":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue at {address} is not SERVING")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="cycles per sequential run")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the concurrent run")
    parser.add_argument(
        "--mesh-tls", choices=("mtls", "plaintext"), default="mtls", help="service identity on the queue's port (default: on)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aigw-queue-bench-") as tmp:
        db = FerretDBProcess(ensure_built(REPO), Path(tmp) / "db")
        db.start()
        port = free_port()
        config = Path(tmp) / "queue.yaml"
        tls_dir = ensure_mesh_pki(Path(tmp) / "pki") if args.mesh_tls == "mtls" else None
        config.write_text(yaml.safe_dump(queue_config(db.uri, port, tls_dir)))
        env = {**os.environ, "AIGW_CONFIG": str(config), "PYTHONPATH": f"{REPO}:{REPO / 'gen'}"}
        queue = subprocess.Popen([sys.executable, "-m", "aigw_server.queue"], cwd=REPO, env=env)
        try:
            wait_ready(f"127.0.0.1:{port}", tls_dir)
            install_event_loop()
            results = asyncio.run(measure(f"127.0.0.1:{port}", args.count, args.clients, args.seconds, tls_dir))
            results["mesh_tls"] = args.mesh_tls
        finally:
            queue.terminate()
            queue.wait(30)
            db.stop()
    print(json.dumps({"benchmark": "queue durable cycle (Submit -> AcquireJob -> CompleteJob)", **results}, indent=2))


if __name__ == "__main__":
    main()
