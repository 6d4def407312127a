"""A/B of the router calling HTTP engines directly vs through textgen's Generate (`routing.direct_engines`).

`python -m bench.direct_bench --requests 400 --rounds 2` starts the local mesh (textgen attached to
bench.upstream) once per setting and round, alternating, and reports per setting: the gRPC Chat p50/p99 at
one client, the added p50 over calling the upstream directly, and the CPU milliseconds per Chat of the
router, textgen and every process of the mesh together (psutil).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from aigw_server.runtime.auth import TokenSigner
from bench.report import emit
from bench.router_bench import cpu_per_request
from bench.run import JWT_SECRET, MAX_TOKENS, MESSAGES, mesh_spec, sequential_grpc, sequential_http, upstream
from harness.ferretdb import free_port
from harness.mesh import Mesh
from harness.mesh_config import RoutingKnobs


def one_setting(direct: bool, up_url: str, requests: int) -> dict[str, float]:
    """One mesh with `routing.direct_engines` = `direct`: Chat latency and CPU per request."""
    with tempfile.TemporaryDirectory(prefix="aigw-direct-bench-") as tmp:
        spec = replace(mesh_spec(Path(tmp) / "data", up_url), routing=RoutingKnobs(direct_engines=direct))
        mesh = Mesh(spec.write(Path(tmp) / "bench.yaml"))
        mesh.start(timeout=180)
        try:
            cfg = mesh.cfg
            token, _ = TokenSigner(cfg.auth, JWT_SECRET).issue_access("admin", "user")
            sequential_grpc(cfg.services.router.address, token, max(50, requests // 5), 0)  # warm-up
            programs = tuple(mesh.pids())
            run, cpu = cpu_per_request(mesh, lambda: sequential_grpc(cfg.services.router.address, token, requests, 0), programs)
        finally:
            mesh.stop()
    textgen = sum(v for k, v in cpu.items() if k.startswith("textgen"))
    return {
        "chat_p50_ms": run.p50_ms,
        "chat_p99_ms": run.p99_ms,
        "errors": run.errors,
        "cpu_ms_router": cpu.get("router", 0.0),
        "cpu_ms_textgen": round(textgen, 3),
        "cpu_ms_router_plus_textgen": round(cpu.get("router", 0.0) + textgen, 3),
        "cpu_ms_all": round(sum(cpu.values()), 3),
    }


def measure(requests: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict[str, float]]] = {"hop": [], "direct": []}
    with upstream(port):
        body = {"model": "upstream", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        base = sequential_http("upstream direct", f"{url}/v1/chat/completions", body, {}, requests, 50)
        for _ in range(rounds):
            for name, direct in (("hop", False), ("direct", True)):
                results[name].append(one_setting(direct, url, requests))
    report: dict[str, Any] = {"upstream_p50_ms": base.p50_ms, "requests": requests, "rounds": rounds}
    for name, runs in results.items():
        summary = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        summary["added_p50_ms"] = round(summary["chat_p50_ms"] - base.p50_ms, 3)
        report[name] = summary
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="direct_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="sequential Chat calls per mesh")
    parser.add_argument("--rounds", type=int, default=2, help="meshes per setting, alternating hop / direct")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    emit(measure(args.requests, args.rounds), args.out)


if __name__ == "__main__":
    main()
