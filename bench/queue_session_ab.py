"""A/B of the router's queue calls in one run: one Session stream (routing.queue_session) against a unary call each.

`python -m bench.queue_session_ab` measures two things, alternating the two modes so that both see the
same machine load:
- the router's durable owner cycle (Submit with accept_lease, then CompleteJob) through the router's own
  QueueClient against one queue, in interleaved batches: p50 and the CPU of the caller and of the queue
  per cycle;
- the 1-client gRPC Chat through the whole local mesh, started with the session on, then off, then again
  (A B A B): p50 and the CPU of router and queue per Chat.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.auth import TokenSigner
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.queue_client import QueueClient
from bench.queue_bench import CHAT, RESULT
from bench.report import emit
from bench.router_bench import cpu_per_request
from bench.run import JWT_SECRET, MODEL, mesh_spec, sequential_grpc, upstream
from harness.ferretdb import free_port
from harness.mesh import Mesh
from harness.mesh_config import RoutingKnobs

MODES = {"session": True, "unary": False}


async def owner_cycle(queue: QueueClient, worker: str) -> None:
    """The queue calls of one synchronous Chat as the router makes them."""
    sub = await queue.submit(queue_pb2.SubmitRequest(model=MODEL, chat=CHAT, owner_id=worker, accept_lease=True))
    lease = sub.lease
    await queue.complete(queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, chat_result=RESULT))


async def queue_cycles(mesh: Mesh, cycles: int, batches: int) -> dict[str, Any]:
    """Owner cycles through QueueClient both ways, in alternating batches; p50 and CPU per cycle of caller and queue."""
    cfg = mesh.cfg
    tls = MeshTls.load(cfg.tls_path, "router")
    queue_proc, me = psutil.Process(mesh.pids()["queue"]), psutil.Process()
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, dict[str, float]] = {mode: {"caller": 0.0, "queue": 0.0} for mode in MODES}
    clients = {mode: QueueClient.connect(cfg.services.queue.address, tls, session) for mode, session in MODES.items()}
    worker = "ab-" + uuid.uuid4().hex[:6]
    try:
        for client in clients.values():
            for _ in range(50):
                await owner_cycle(client, worker)
        for _ in range(batches):
            for mode, client in clients.items():
                before = (_cpu(me), _cpu(queue_proc))
                for _ in range(cycles // batches):
                    t = time.perf_counter()
                    await owner_cycle(client, worker)
                    samples[mode].append((time.perf_counter() - t) * 1000)
                cpu[mode]["caller"] += _cpu(me) - before[0]
                cpu[mode]["queue"] += _cpu(queue_proc) - before[1]
    finally:
        for client in clients.values():
            await client.close()
    return {
        mode: {
            "cycles": len(samples[mode]),
            "p50_ms": round(statistics.median(samples[mode]), 3),
            "cpu_ms_per_cycle": {k: round(v * 1000 / len(samples[mode]), 3) for k, v in cpu[mode].items()},
        }
        for mode in MODES
    }


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def chat_run(tmp: Path, up_url: str, session: bool, requests: int) -> tuple[Mesh, dict[str, Any]]:
    spec = replace(mesh_spec(tmp / f"data-{uuid.uuid4().hex[:6]}", up_url), routing=RoutingKnobs(queue_session=session))
    mesh = Mesh(spec.write(tmp / f"bench-{uuid.uuid4().hex[:6]}.yaml"))
    mesh.start(timeout=180)
    token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
    address = mesh.cfg.services.router.address
    sequential_grpc(address, token, max(50, requests // 5), 0)
    run, cpu_ms = cpu_per_request(mesh, lambda: sequential_grpc(address, token, requests, 0), ("router", "queue"))
    return mesh, {"p50_ms": round(run.p50_ms, 3), "p99_ms": round(run.p99_ms, 3), "errors": run.errors, "cpu_ms_per_chat": cpu_ms}


def measure(requests: int, cycles: int) -> dict[str, Any]:
    up_port = free_port()
    report: dict[str, Any] = {"chat": {mode: [] for mode in MODES}}
    with tempfile.TemporaryDirectory(prefix="aigw-session-ab-") as tmp_name, upstream(up_port):
        tmp, up_url = Path(tmp_name), f"http://127.0.0.1:{up_port}"
        for round_no in range(2):
            for mode, session in MODES.items():
                mesh, result = chat_run(tmp, up_url, session, requests)
                try:
                    report["chat"][mode].append(result)
                    if round_no == 0 and session:
                        report["queue_cycle"] = asyncio.run(queue_cycles(mesh, cycles, 10))
                finally:
                    mesh.stop()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="queue_session_ab", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="sequential Chats per mesh run")
    parser.add_argument("--cycles", type=int, default=2000, help="owner cycles per mode")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    emit(measure(args.requests, args.cycles), args.out)


if __name__ == "__main__":
    main()
