"""What service identity costs per call: the same unary RPC over a long-lived channel, plaintext vs mTLS.

One process serves the standard health service on two ports of one server, a plaintext one and an mTLS
one (client certificate required, every call checked by the authorisation interceptor, as the mesh
runs), and calls each from a long-lived channel, in alternating rounds so that machine noise hits both
alike. Reports wall-clock p50/p99 per call and the process's CPU time per call (client and server sides
together). The handshake happens once per channel, so it is excluded: this is the per-call price.

    PYTHONPATH=.:gen .venv/bin/python bench/mtls_cost.py --calls 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aigw_server.runtime.authz import AuthorizationInterceptor, MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.pki import ensure_mesh_pki
from aigw_server.runtime.server import SERVER_OPTIONS, install_event_loop


async def calls(stub: health_pb2_grpc.HealthAsyncStub, count: int) -> tuple[list[float], float]:
    """`count` sequential Check calls: their latencies and the CPU seconds the process spent."""
    request = health_pb2.HealthCheckRequest()
    samples: list[float] = []
    cpu = time.process_time()
    for _ in range(count):
        begin = time.perf_counter()
        await stub.Check(request)
        samples.append(time.perf_counter() - begin)
    return samples, time.process_time() - cpu


def summary(samples: list[float], cpu: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "calls": len(samples),
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
        "cpu_us_per_call": round(cpu / len(samples) * 1e6, 1),
    }


async def measure(pki: Path, count: int, rounds: int) -> dict[str, Any]:
    tls = MeshTls.load(pki, "queue")
    server = grpc.aio.server(interceptors=[AuthorizationInterceptor("queue")], options=SERVER_OPTIONS)
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # grpc_health types no `aio` re-export
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    plain_port = server.add_insecure_port("127.0.0.1:0")
    mtls_port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    # The interceptor lets PUBLIC call health, so the plaintext port answers through the same chain.
    plain = make_channel(f"127.0.0.1:{plain_port}")
    secure = make_channel(f"127.0.0.1:{mtls_port}", MeshTls.load(pki, "router"), "queue")
    stubs = {"plaintext": health_pb2_grpc.HealthStub(plain), "mtls": health_pb2_grpc.HealthStub(secure)}
    results: dict[str, tuple[list[float], float]] = {name: ([], 0.0) for name in stubs}
    try:
        for stub in stubs.values():  # warm up: connect, handshake, first calls
            await calls(stub, 200)
        for _ in range(rounds):
            for name, stub in stubs.items():
                samples, cpu = await calls(stub, count)
                results[name] = (results[name][0] + samples, results[name][1] + cpu)
    finally:
        await plain.close(None)
        await secure.close(None)
        await server.stop(0)
    report: dict[str, Any] = {name: summary(*results[name]) for name in stubs}
    report["added_by_mtls"] = {
        "p50_us": round(report["mtls"]["p50_us"] - report["plaintext"]["p50_us"], 1),
        "cpu_us_per_call": round(report["mtls"]["cpu_us_per_call"] - report["plaintext"]["cpu_us_per_call"], 1),
    }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and transport")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args(argv)
    install_event_loop()
    with tempfile.TemporaryDirectory(prefix="aigw-mtls-cost-") as tmp:
        pki = ensure_mesh_pki(Path(tmp) / "pki")
        report = asyncio.run(measure(pki, args.calls, args.rounds))
    print(json.dumps({"benchmark": "unary RPC per call, plaintext vs mTLS (long-lived channels)", **report}, indent=2))


if __name__ == "__main__":
    main()
