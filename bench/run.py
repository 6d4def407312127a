"""`make bench`: the gateway against the same fast upstream, side by side — latency, throughput, memory, OCR."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_common.auth import TokenSigner
from aigw_common.ferretdb import free_port, free_ports
from aigw_common.mesh import Mesh, services_on, write_config
from bench.documents import page_png

REPO = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-" + "b" * 40
MODEL = "bench-chat"
MESSAGES = [{"role": "user", "content": "Say hello."}]
MAX_TOKENS = 16
MESH_PROGRAMS = ("queue", "admin", "router", "textgen-upstream", "ocr-tesseract-0", "edge")


@dataclass
class Run:
    """One measured scenario."""

    name: str
    path: str
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    if len(samples_ms) < 2:
        return (samples_ms[0],) * 3 if samples_ms else (0.0, 0.0, 0.0)
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return q[49], q[89], q[98]


def finish(run: Run, samples_ms: list[float], seconds: float) -> Run:
    run.requests = len(samples_ms) + run.errors
    run.seconds = seconds
    run.rps = len(samples_ms) / seconds if seconds else 0.0
    run.p50_ms, run.p90_ms, run.p99_ms = percentiles(samples_ms)
    return run


def mesh_config(data: Path, upstream_url: str) -> dict[str, Any]:
    """The local mesh with textgen attached to the fast upstream; limits high enough not to refuse benchmark load."""
    ports = iter(free_ports(24))  # distinct: ports chosen one by one may repeat
    return {
        "server": {"host": "127.0.0.1", "port": next(ports), "metrics_port": next(ports)},
        "services": services_on(ports),
        "data_dir": str(data),
        "database": {"uri": ""},
        "auth": {"jwt_secret": JWT_SECRET, "admin_password": "bench-admin-password"},
        "rate_limit": {"default": {"requests_per_minute": 100_000_000, "burst": 1_000_000}},
        "logging": {"level": "WARNING"},
        "queue": {"max_waiting": 1000},
        "models": {
            MODEL: {"kind": "chat", "max_concurrent": 10, "max_waiting": 1000, "default_max_tokens": MAX_TOKENS},
            "tesseract": {"kind": "ocr", "max_concurrent": 2, "max_waiting": 1000, "languages": ["eng"]},
        },
        "backends": [
            {
                "name": "upstream",
                "kind": "textgen",
                "address": f"127.0.0.1:{next(ports)}",
                "engine": "openai",
                "mode": "attach",
                "url": upstream_url,
                "models": [MODEL],
                "initial_model": MODEL,
                "capacity": 64,
            },
            {
                "name": "tesseract-0",
                "kind": "ocr",
                "address": f"127.0.0.1:{next(ports)}",
                "engine": "tesseract",
                "models": ["tesseract"],
                "initial_model": "tesseract",
                "capacity": 2,
            },
        ],
    }


@contextmanager
def upstream(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(port)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def sequential_http(name: str, url: str, body: dict[str, Any], headers: dict[str, str], count: int, warmup: int) -> Run:
    run = Run(name, "rest" if "api/chat" in url else "direct", 1)
    samples: list[float] = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(warmup):
            client.post(url, json=body)
        begin = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            r = client.post(url, json=body)
            if r.status_code == 200:
                samples.append((time.perf_counter() - t) * 1000)
            else:
                run.errors += 1
        return finish(run, samples, time.perf_counter() - begin)


def sequential_grpc(address: str, token: str, count: int, warmup: int) -> Run:
    run = Run("gateway gRPC Chat", "grpc", 1)
    samples: list[float] = []
    request = router_pb2.ChatRequest(
        model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="Say hello.")], max_tokens=MAX_TOKENS
    )
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(address) as channel:
        chat = router_pb2_grpc.RouterServiceStub(channel).Chat
        for _ in range(warmup):
            chat(request, metadata=metadata, timeout=30)
        begin = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            try:
                chat(request, metadata=metadata, timeout=30)
                samples.append((time.perf_counter() - t) * 1000)
            except grpc.RpcError:
                run.errors += 1
        return finish(run, samples, time.perf_counter() - begin)


async def _grpc_load(address: str, token: str, clients: int, seconds: float) -> tuple[list[float], int, float]:
    request = router_pb2.ChatRequest(
        model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="Say hello.")], max_tokens=MAX_TOKENS
    )
    metadata = (("authorization", f"Bearer {token}"),)
    samples: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        chat = router_pb2_grpc.RouterServiceStub(channel).Chat
        stop_at = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    await chat(request, metadata=metadata, timeout=30)
                    samples.append((time.perf_counter() - t) * 1000)
                except grpc.aio.AioRpcError:
                    errors += 1

        begin = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return samples, errors, time.perf_counter() - begin


def concurrent_grpc(address: str, token: str, clients: int, seconds: float) -> Run:
    samples, errors, elapsed = asyncio.run(_grpc_load(address, token, clients, seconds))
    run = Run(f"gateway gRPC Chat x{clients}", "grpc", clients, errors=errors)
    return finish(run, samples, elapsed)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else 0.0


def wrk(name: str, url: str, body: dict[str, Any], headers: dict[str, str], clients: int, seconds: float, path: str) -> Run:
    """Load from wrk (C, event-driven), so the load generator costs the 2 cores little."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
        script.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        for k, v in {"Content-Type": "application/json", **headers}.items():
            script.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    Path(script.name).unlink()
    run = Run(name, path, clients)
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    run.p50_ms, run.p90_ms, run.p99_ms = (_wrk_ms(pct.get(k, "0ms")) for k in ("50", "90", "99"))
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    if total:
        run.requests = int(total.group(1))
        run.seconds = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    run.errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0)
    run.rps = (run.requests - run.errors) / run.seconds if run.seconds else 0.0
    return run


def memory(mesh: Mesh) -> dict[str, float]:
    """Resident MB of every supervised process (with its children, e.g. tesseract), and the sum of the mesh's."""
    out: dict[str, float] = {}
    for name, pid in mesh.pids().items():
        proc = psutil.Process(pid)
        rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        out[name] = round(rss / 2**20, 1)
    out["mesh_total"] = round(sum(v for k, v in out.items() if k in MESH_PROGRAMS), 1)
    out["mesh_total_with_ferretdb"] = round(out["mesh_total"] + out.get("ferretdb", 0.0), 1)
    return out


def cpu_seconds(mesh: Mesh) -> dict[str, float]:
    """CPU time (user + system) used so far by every supervised process and its children."""
    out: dict[str, float] = {}
    for name, pid in mesh.pids().items():
        proc = psutil.Process(pid)
        times = [proc.cpu_times(), *(c.cpu_times() for c in proc.children(recursive=True))]
        out[name] = sum(t.user + t.system for t in times)
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], run: Run) -> dict[str, float]:
    """Milliseconds of CPU each process spent per successful request during `run`."""
    done = max(1, run.requests - run.errors)
    return {name: round((after[name] - before.get(name, 0.0)) * 1000 / done, 3) for name in after}


def ocr_runs(mesh: Mesh, token: str, pages: int) -> list[Run]:
    """Pages per second: pytesseract one page at a time, and the gateway's REST path two at a time.

    Not a like-for-like overhead measure (the service pins Tesseract to one thread per page and runs
    pages in parallel); `bench/ocr_bench.py` measures the service's overhead on the same pages and settings.
    """
    import io

    import pytesseract  # type: ignore[import-untyped]
    from PIL import Image

    images = [page_png(i) for i in range(pages)]
    begin = time.perf_counter()
    for data in images:
        pytesseract.image_to_string(Image.open(io.BytesIO(data)), lang="eng")
    direct = Run("tesseract direct", "direct", 1, requests=pages, seconds=time.perf_counter() - begin)
    direct.rps = pages / direct.seconds

    url = f"{mesh.edge_url}/api/ocr?model=tesseract&languages=eng"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}

    async def through() -> tuple[int, float]:
        async with httpx.AsyncClient(headers=headers, timeout=120) as client:
            sem = asyncio.Semaphore(2)

            async def one(data: bytes) -> bool:
                async with sem:
                    return (await client.post(url, content=data)).status_code == 200

            t = time.perf_counter()
            ok = await asyncio.gather(*(one(d) for d in images))
            return pages - sum(ok), time.perf_counter() - t

    errors, seconds = asyncio.run(through())
    gw = Run("gateway REST /api/ocr x2", "rest", 2, requests=pages, errors=errors, seconds=seconds)
    gw.rps = (pages - errors) / seconds
    return [direct, gw]


def processed(mesh: Mesh) -> int:
    with mesh.open("queue", identity="admin") as channel:
        stats = queue_pb2_grpc.QueueServiceStub(channel).GetQueueStats(queue_pb2.GetQueueStatsRequest(model=MODEL), timeout=10)
        return int(stats.total_processed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per 1-client latency run")
    parser.add_argument("--seconds", type=float, default=10, help="duration of each concurrent run")
    parser.add_argument("--ocr-pages", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "docs" / "bench" / "latest.json"))
    args = parser.parse_args(argv)
    runs: list[Run] = []
    up_port = free_port()
    with tempfile.TemporaryDirectory(prefix="aigw-bench-") as tmp, upstream(up_port):
        up_url = f"http://127.0.0.1:{up_port}"
        cfg_path = write_config(Path(tmp) / "bench.yaml", mesh_config(Path(tmp) / "data", up_url))
        mesh = Mesh(cfg_path)
        startup = mesh.start(timeout=180)
        try:
            time.sleep(2)
            idle = memory(mesh)
            cfg = mesh.cfg
            token, _ = TokenSigner(cfg.auth, JWT_SECRET).issue_access("admin", "user")
            auth = {"Authorization": f"Bearer {token}"}
            direct_body = {"model": "upstream", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            gw_body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            warm = max(50, args.requests // 10)
            runs.append(sequential_http("upstream direct", f"{up_url}/v1/chat/completions", direct_body, {}, args.requests, warm))
            runs.append(sequential_grpc(cfg.services.router.address, token, args.requests, warm))
            runs.append(
                sequential_http("gateway REST /api/chat", f"{mesh.edge_url}/api/chat", gw_body, auth, args.requests, warm)
            )
            for clients in (10, 50):
                runs.append(
                    wrk(
                        f"upstream direct x{clients}",
                        f"{up_url}/v1/chat/completions",
                        direct_body,
                        {},
                        clients,
                        args.seconds,
                        "direct",
                    )
                )
                before = cpu_seconds(mesh)
                rest = wrk(f"gateway REST x{clients}", f"{mesh.edge_url}/api/chat", gw_body, auth, clients, args.seconds, "rest")
                rest.extra["cpu_ms_per_request"] = cpu_per_request(before, cpu_seconds(mesh), rest)
                runs.append(rest)
            before = cpu_seconds(mesh)
            runs.append(concurrent_grpc(cfg.services.router.address, token, 10, args.seconds))
            runs[-1].extra["cpu_ms_per_request"] = cpu_per_request(before, cpu_seconds(mesh), runs[-1])
            loaded = memory(mesh)
            runs.extend(ocr_runs(mesh, token, args.ocr_pages))
            chat_ok = sum(r.requests - r.errors for r in runs if r.path in ("rest", "grpc") and "ocr" not in r.name)
            chat_ok += 2 * (max(50, args.requests // 10))
            stored = processed(mesh)
        finally:
            mesh.stop()
    report = build_report(runs, idle, loaded, startup, stored, chat_ok)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwrote {args.out}")


def build_report(
    runs: list[Run], idle: dict[str, float], loaded: dict[str, float], startup: float, stored: int, sent_ok: int
) -> dict[str, Any]:
    by = {r.name: r for r in runs}
    direct1 = by["upstream direct"]
    added = {
        "grpc_p50_ms": round(by["gateway gRPC Chat"].p50_ms - direct1.p50_ms, 3),
        "grpc_p99_ms": round(by["gateway gRPC Chat"].p99_ms - direct1.p99_ms, 3),
        "rest_p50_ms": round(by["gateway REST /api/chat"].p50_ms - direct1.p50_ms, 3),
        "rest_p99_ms": round(by["gateway REST /api/chat"].p99_ms - direct1.p99_ms, 3),
    }
    targets = {
        "grpc_added_p50_le_2.5ms": added["grpc_p50_ms"] <= 2.5,
        "grpc_added_p99_le_6ms": added["grpc_p99_ms"] <= 6.0,
        "rest_added_p50_le_3.5ms": added["rest_p50_ms"] <= 3.5,
        "rest_rps_x10_ge_600": by["gateway REST x10"].rps >= 600,
        "idle_rss_le_400MB": idle["mesh_total"] <= 400,
    }
    return {
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": "make bench",
        "startup_seconds": round(startup, 1),
        "durability": {
            "every_request_persisted_through_queue": True,
            "successful_chat_requests_sent": sent_ok,
            "queue_total_processed": stored,
            "all_in_history": stored >= sent_ok,
        },
        "added_latency_ms": added,
        "ratios_to_direct": {
            r.name: round(r.p50_ms / direct1.p50_ms, 2)
            for r in runs
            if r.clients == 1 and r.p50_ms and "ocr" not in r.name and "tesseract" not in r.name
        },
        "memory_mb": {"idle": idle, "after_load": loaded},
        "targets_met": targets,
        "runs": [asdict(r) for r in runs],
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"{'scenario':32} {'clients':>7} {'req':>7} {'err':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"]
    for r in report["runs"]:
        counts = f"{r['clients']:>7} {r['requests']:>7} {r['errors']:>5} {r['rps']:>9.1f}"
        lines.append(f"{r['name']:32} {counts} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    lines.append("")
    lines.append("added latency over direct (1 client): " + ", ".join(f"{k}={v}" for k, v in report["added_latency_ms"].items()))
    idle = report["memory_mb"]["idle"]
    lines.append(f"idle RSS: mesh {idle['mesh_total']} MB (with FerretDB: {idle['mesh_total_with_ferretdb']} MB)")
    for r in report["runs"]:
        if "cpu_ms_per_request" in r["extra"]:
            lines.append(f"CPU ms per request, {r['name']}: " + json.dumps(r["extra"]["cpu_ms_per_request"]))
    lines.append("durability: " + json.dumps(report["durability"]))
    lines.append("targets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in report["targets_met"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
