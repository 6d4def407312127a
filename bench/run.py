"""`make bench`: the gateway against the same fast upstream, side by side.

Latency, time to first token, throughput, CPU per request, cost by concurrency and queue depth,
per-hop costs, memory, OCR (see docs/performance.md).
"""

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
from collections.abc import Awaitable, Callable, Iterator
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
from aigw_server.runtime.auth import TokenSigner
from aigw_server.runtime.config import GatewayConfig, RateLimit
from bench.documents import page_png
from harness.ferretdb import free_port
from harness.mesh import Mesh
from harness.mesh_config import AttachedEngine, Auth, ChatModel, MeshSpec, OcrModel, QueueKnobs, TesseractOcr

REPO = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-" + "b" * 40
MODEL = "bench-chat"
MESSAGES = [{"role": "user", "content": "Say hello."}]
MAX_TOKENS = 16
PARKED = "bench-parked"
"""A chat model no backend serves: its jobs wait in the queue (the queue-depth scenario)."""
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


def mesh_spec(data: Path, upstream_url: str) -> MeshSpec:
    """The local mesh with textgen attached to the fast upstream; limits high enough not to refuse benchmark load."""
    return MeshSpec(
        data_dir=data,
        auth=Auth(JWT_SECRET, "bench-admin-password"),
        rate_limit=RateLimit(requests_per_minute=100_000_000, burst=1_000_000),
        log_level="WARNING",
        queue=QueueKnobs(max_waiting=5000),
        models=(
            ChatModel(MODEL, max_concurrent=10, max_waiting=1000, default_max_tokens=MAX_TOKENS),
            ChatModel(PARKED, max_concurrent=1, max_waiting=2000, default_max_tokens=MAX_TOKENS),
            OcrModel("tesseract", max_concurrent=2, max_waiting=1000),
        ),
        backends=(
            AttachedEngine("upstream", upstream_url, models=(MODEL,), capacity=64),
            TesseractOcr(),
        ),
    )


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


def sequential_http(
    name: str, url: str, body: dict[str, Any], headers: dict[str, str], count: int, warmup: int, path: str = ""
) -> Run:
    run = Run(name, path or ("rest" if "api/chat" in url else "direct"), 1)
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


def sequential_grpc(
    address: str, token: str, count: int, warmup: int, name: str = "gateway gRPC Chat", priority: str = ""
) -> Run:
    run = Run(name, "grpc", 1)
    samples: list[float] = []
    request = router_pb2.ChatRequest(
        model=MODEL,
        messages=[common_pb2.ChatMessage(role="user", content="Say hello.")],
        max_tokens=MAX_TOKENS,
        priority=priority,
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


def ttft_grpc(address: str, token: str, count: int, warmup: int) -> Run:
    """`StreamChat` one at a time: p50/p90/p99 of the time to the first text delta; the whole stream in `extra`."""
    run = Run("gateway gRPC StreamChat TTFT", "grpc", 1)
    first: list[float] = []
    whole: list[float] = []
    request = router_pb2.StreamChatRequest(
        model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="Say hello.")], max_tokens=MAX_TOKENS
    )
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(address) as channel:
        stream = router_pb2_grpc.RouterServiceStub(channel).StreamChat
        begin = time.perf_counter()
        for i in range(warmup + count):
            if i == warmup:
                begin = time.perf_counter()
            t = time.perf_counter()
            got = 0.0
            try:
                for item in stream(request, metadata=metadata, timeout=30):
                    if item.delta and not got:
                        got = time.perf_counter() - t
            except grpc.RpcError:
                run.errors += i >= warmup
                continue
            if i >= warmup and got:
                first.append(got * 1000)
                whole.append((time.perf_counter() - t) * 1000)
        finish(run, first, time.perf_counter() - begin)
    run.extra["stream_p50_ms"] = round(percentiles(whole)[0], 3)
    return run


def ttft_sse(name: str, url: str, body: dict[str, Any], headers: dict[str, str], count: int, warmup: int, path: str) -> Run:
    """An OpenAI-style SSE stream one at a time: percentiles of the time to the first chunk that carries content."""
    run = Run(name, path, 1)
    first: list[float] = []
    whole: list[float] = []
    with httpx.Client(headers=headers, timeout=30) as client:
        begin = time.perf_counter()
        for i in range(warmup + count):
            if i == warmup:
                begin = time.perf_counter()
            t = time.perf_counter()
            got = 0.0
            with client.stream("POST", url, json={**body, "stream": True}) as r:
                if r.status_code != 200:
                    r.read()
                    run.errors += i >= warmup
                    continue
                for line in r.iter_lines():
                    if got or not line.startswith("data: {"):
                        continue
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        got = time.perf_counter() - t
            if i >= warmup and got:
                first.append(got * 1000)
                whole.append((time.perf_counter() - t) * 1000)
    finish(run, first, time.perf_counter() - begin)
    run.extra["stream_p50_ms"] = round(percentiles(whole)[0], 3)
    return run


async def _park(address: str, token: str, count: int) -> int:
    """Submits `count` low-priority async chats for PARKED (a model no backend serves, so they wait); returns the errors."""
    request = router_pb2.ChatRequest(
        model=PARKED,
        messages=[common_pb2.ChatMessage(role="user", content="Wait.")],
        max_tokens=MAX_TOKENS,
        priority="low",
        async_mode=True,
    )
    metadata = (("authorization", f"Bearer {token}"),)
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        chat = router_pb2_grpc.RouterServiceStub(channel).Chat
        todo = iter(range(count))

        async def loop() -> None:
            nonlocal errors
            for _ in todo:
                try:
                    await chat(request, metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(10)))
    return errors


def waiting(mesh: Mesh, model: str) -> int:
    with mesh.open("queue", identity="admin") as channel:
        stub = queue_pb2_grpc.QueueServiceStub(channel)
        return int(stub.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=model), timeout=10).waiting)


def queue_depth(mesh: Mesh, token: str, depths: tuple[int, ...], count: int) -> list[Run]:
    """A high-priority gRPC Chat one at a time while N low-priority async jobs wait in the queue.

    The waiting jobs are real, durable jobs of PARKED, a configured chat model that no backend serves:
    they stay QUEUED (nothing can lease them) in the same queue and the same store as the measured
    requests, which is what a deep backlog costs everyone else. The measured model has free slots, so
    any growth is the cost of depth itself (ordering, positions, store scans), not waiting behind them.
    """
    address = mesh.cfg.services.router.address
    runs: list[Run] = []
    parked = waiting(mesh, PARKED)
    for depth in depths:
        errors = asyncio.run(_park(address, token, depth - parked)) if depth > parked else 0
        parked = waiting(mesh, PARKED)
        before = cpu_seconds(mesh)
        run = sequential_grpc(address, token, count, 20, f"gRPC Chat high, {depth} waiting", "high")
        run.extra["cpu_ms_per_request"] = cpu_per_request(before, cpu_seconds(mesh), run)
        run.extra["waiting"] = parked
        run.extra["park_errors"] = errors
        runs.append(run)
    return runs


async def _hop_runs(cfg: GatewayConfig, edge_url: str, engine_url: str, token: str, count: int, warmup: int) -> dict[str, Run]:
    """Each leg of a REST chat measured on its own, as the service before it makes the call (same identity, mTLS).

    The legs take turns, one request each per round, so that the machine's noise falls on all of them alike.
    """
    from aigw_server.runtime.authz import MeshTls
    from aigw_server.runtime.channels import make_channel

    job = common_pb2.ChatJob(
        messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES],
        params=common_pb2.GenerationParams(max_tokens=MAX_TOKENS),
    )
    result = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="Hello!"), finish_reason="stop")
    as_router = MeshTls.load(cfg.tls_path, "router")
    as_edge = MeshTls.load(cfg.tls_path, "edge")
    metadata = (("authorization", f"Bearer {token}"),)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    engine_body = {"model": "upstream", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    samples: dict[str, list[float]] = {k: [] for k in ("rest", "hop", "engine", "chat", "submit", "complete")}
    async with (
        make_channel(cfg.services.queue.address, as_router, "queue") as qu,
        make_channel(cfg.services.router.mesh_address, as_edge, "router") as ro,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
    ):
        queue = queue_pb2_grpc.QueueServiceStub(qu)
        router = router_pb2_grpc.RouterServiceStub(ro)
        chat = router_pb2.ChatRequest(model=MODEL, messages=job.messages, max_tokens=MAX_TOKENS)
        health = router_pb2.GetHealthRequest()
        submit = queue_pb2.SubmitRequest(model=MODEL, chat=job, owner_id="bench-hops", accept_lease=True)

        async def rest() -> None:
            (await http.post(f"{edge_url}/api/chat", json=body)).raise_for_status()

        async def engine() -> None:  # the call the router's worker makes to the engine (routing.direct_engines)
            (await http.post(f"{engine_url}/v1/chat/completions", json=engine_body)).raise_for_status()

        legs: dict[str, Callable[[], Awaitable[Any]]] = {
            "rest": rest,
            "hop": lambda: router.GetHealth(health),
            "engine": engine,
            "chat": lambda: router.Chat(chat, metadata=metadata),
        }
        begin = time.perf_counter()
        for i in range(warmup + count):
            if i == warmup:
                begin = time.perf_counter()
            times: dict[str, float] = {}
            for name, call in legs.items():
                t = time.perf_counter()
                await call()
                times[name] = time.perf_counter() - t
            t = time.perf_counter()
            lease = (await queue.Submit(submit)).lease
            times["submit"] = time.perf_counter() - t
            t = time.perf_counter()
            done = queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id=lease.request_id, chat_result=result)
            await queue.CompleteJob(done)
            times["complete"] = time.perf_counter() - t
            if i >= warmup:
                for name, seconds in times.items():
                    samples[name].append(seconds * 1000)
        elapsed = time.perf_counter() - begin
    names = {
        "rest": "REST /api/chat (hop round)",
        "hop": "router GetHealth as the edge (one hop)",
        "engine": "engine chat completion as the router",
        "chat": "router Chat as the edge",
        "submit": "queue Submit (accept_lease) as the router",
        "complete": "queue CompleteJob as the router",
    }
    return {k: finish(Run(names[k], "grpc", 1), v, elapsed) for k, v in samples.items()}


def hop_table(runs: dict[str, Run]) -> dict[str, float]:
    """p50 milliseconds of each leg of a REST chat, by subtraction of legs measured on their own (see docs/performance.md)."""
    rest, hop, eng, chat, sub, comp = (runs[k].p50_ms for k in ("rest", "hop", "engine", "chat", "submit", "complete"))
    return {
        "client_to_edge": round(rest - chat, 3),
        "edge_to_router": round(hop, 3),
        "router_to_queue_submit": round(sub, 3),
        "router_to_engine": round(eng, 3),
        "router_to_queue_complete": round(comp, 3),
        "router_own": round(chat - hop - sub - eng - comp, 3),
        "total_rest": round(rest, 3),
    }


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

    import pytesseract
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
        mesh = Mesh(mesh_spec(Path(tmp) / "data", up_url).write(Path(tmp) / "bench.yaml"))
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
            router = cfg.services.router.address
            v1 = f"{mesh.edge_url}/v1/chat/completions"

            def measured(call: Callable[..., Run], *args: Any) -> Run:
                """`call(*args)`, with the CPU each process spent per successful request in its extra."""
                before = cpu_seconds(mesh)
                result = call(*args)
                result.extra["cpu_ms_per_request"] = cpu_per_request(before, cpu_seconds(mesh), result)
                return result

            direct_url = f"{up_url}/v1/chat/completions"
            runs.append(sequential_http("upstream direct", direct_url, direct_body, {}, args.requests, warm))
            runs.append(measured(sequential_grpc, router, token, args.requests, warm))
            api_chat = f"{mesh.edge_url}/api/chat"
            runs.append(measured(sequential_http, "gateway REST /api/chat", api_chat, gw_body, auth, args.requests, warm))
            v1_name = "gateway REST /v1/chat/completions"
            runs.append(measured(sequential_http, v1_name, v1, gw_body, auth, args.requests, warm, "rest"))
            streams = max(50, args.requests // 4)
            runs.append(ttft_sse("upstream direct stream TTFT", direct_url, direct_body, {}, streams, warm // 2, "direct"))
            runs.append(ttft_grpc(router, token, streams, warm // 2))
            runs.append(ttft_sse("gateway REST /v1 stream TTFT", v1, gw_body, auth, streams, warm // 2, "rest"))
            hops = asyncio.run(_hop_runs(cfg, mesh.edge_url, up_url, token, max(100, args.requests // 2), warm // 2))
            for clients in (10, 50):
                runs.append(wrk(f"upstream direct x{clients}", direct_url, direct_body, {}, clients, args.seconds, "direct"))
                runs.append(measured(wrk, f"gateway REST x{clients}", api_chat, gw_body, auth, clients, args.seconds, "rest"))
                runs.append(measured(concurrent_grpc, router, token, clients, args.seconds))
            runs.append(measured(wrk, f"{v1_name} x10", v1, gw_body, auth, 10, args.seconds, "rest"))
            depth_runs = queue_depth(mesh, token, (0, 100, 1000), max(100, args.requests // 5))
            runs.extend(depth_runs)
            loaded = memory(mesh)
            runs.extend(ocr_runs(mesh, token, args.ocr_pages))
            # Every successful gateway chat of MODEL, warm-ups included (the hop runs' direct queue cycles count too).
            chat_ok = sum(r.requests - r.errors for r in runs if r.path in ("rest", "grpc") and "ocr" not in r.name)
            chat_ok += 3 * warm + 2 * (warm // 2) + 20 * len(depth_runs)
            chat_ok += sum(hops[k].requests for k in ("rest", "chat", "submit")) + 3 * (warm // 2)
            stored = processed(mesh)
        finally:
            mesh.stop()
    report = build_report(runs, idle, loaded, startup, stored, chat_ok, hops)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwrote {args.out}")


def build_report(
    runs: list[Run],
    idle: dict[str, float],
    loaded: dict[str, float],
    startup: float,
    stored: int,
    sent_ok: int,
    hops: dict[str, Run],
) -> dict[str, Any]:
    by = {r.name: r for r in runs}
    direct1 = by["upstream direct"]
    direct_ttft = by["upstream direct stream TTFT"]
    grpc1, rest1, v1 = by["gateway gRPC Chat"], by["gateway REST /api/chat"], by["gateway REST /v1/chat/completions"]
    added = {
        "grpc_p50_ms": round(grpc1.p50_ms - direct1.p50_ms, 3),
        "grpc_p99_ms": round(grpc1.p99_ms - direct1.p99_ms, 3),
        "rest_p50_ms": round(rest1.p50_ms - direct1.p50_ms, 3),
        "rest_p99_ms": round(rest1.p99_ms - direct1.p99_ms, 3),
        "openai_p50_ms": round(v1.p50_ms - direct1.p50_ms, 3),
        "openai_p99_ms": round(v1.p99_ms - direct1.p99_ms, 3),
        "grpc_stream_ttft_p50_ms": round(by["gateway gRPC StreamChat TTFT"].p50_ms - direct_ttft.p50_ms, 3),
        "openai_stream_ttft_p50_ms": round(by["gateway REST /v1 stream TTFT"].p50_ms - direct_ttft.p50_ms, 3),
    }
    cpu_total = {r.name: round(sum(r.extra["cpu_ms_per_request"].values()), 3) for r in runs if "cpu_ms_per_request" in r.extra}
    scaling = {
        path: {
            str(r.clients): {
                "rps": round(r.rps, 1),
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "cpu_ms_per_request": cpu_total.get(r.name),
            }
            for r in runs
            if r.name in names
        }
        for path, names in (
            ("rest_api_chat", ("gateway REST /api/chat", "gateway REST x10", "gateway REST x50")),
            ("grpc_chat", ("gateway gRPC Chat", "gateway gRPC Chat x10", "gateway gRPC Chat x50")),
            ("rest_openai", ("gateway REST /v1/chat/completions", "gateway REST /v1/chat/completions x10")),
            ("direct", ("upstream direct", "upstream direct x10", "upstream direct x50")),
        )
    }
    depth = {
        str(r.extra["waiting"]): {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_ms_per_request": cpu_total[r.name]}
        for r in runs
        if "waiting" in r.extra
    }
    rest10 = by["gateway REST x10"]
    durable = stored >= sent_ok
    # DESIGN §8 (the same numbers as the data-plane targets): one run, this machine, the same fast upstream.
    targets = {
        "grpc_added_p50_le_4ms": added["grpc_p50_ms"] <= 4.0,
        "grpc_added_p99_le_8ms": added["grpc_p99_ms"] <= 8.0,
        "rest_api_chat_added_p50_le_5ms": added["rest_p50_ms"] <= 5.0,
        "rest_openai_added_p50_le_5ms": added["openai_p50_ms"] <= 5.0,
        "rest_rps_x10_ge_450": rest10.rps >= 450,
        "cpu_ms_per_request_all_processes_le_3.5": cpu_total["gateway REST x10"] <= 3.5,
        "stream_ttft_added_p50_le_5ms": max(added["grpc_stream_ttft_p50_ms"], added["openai_stream_ttft_p50_ms"]) <= 5.0,
        "idle_rss_le_400MB": idle["mesh_total"] <= 400,
        "every_request_in_history": durable,
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
            "all_in_history": durable,
        },
        "added_latency_ms": added,
        "cpu_ms_per_request_all_processes": cpu_total,
        "concurrency": scaling,
        "queue_depth": depth,
        "hops_p50_ms": hop_table(hops),
        "hop_runs": [asdict(r) for r in hops.values()],
        "ratios_to_direct": {
            r.name: round(r.p50_ms / direct1.p50_ms, 2)
            for r in runs
            if r.clients == 1 and r.p50_ms and r.path != "direct" and "TTFT" not in r.name and "waiting" not in r.extra
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
    lines.append("CPU ms per request, all processes: " + json.dumps(report["cpu_ms_per_request_all_processes"]))
    lines.append("")
    lines.append(f"{'concurrency':16} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>10}")
    for path, rows in report["concurrency"].items():
        for clients, row in rows.items():
            cpu = f"{row['cpu_ms_per_request']:>10.2f}" if row["cpu_ms_per_request"] is not None else f"{'-':>10}"
            lines.append(f"{path:16} {clients:>7} {row['rps']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {cpu}")
    lines.append("")
    lines.append("high-priority gRPC Chat while N jobs wait (p50 / p99 ms, CPU ms per request):")
    for n, row in report["queue_depth"].items():
        lines.append(f"  N={n:>5}: {row['p50_ms']:.2f} / {row['p99_ms']:.2f}, {row['cpu_ms_per_request']:.2f}")
    lines.append("")
    lines.append("per hop, p50 ms (legs measured on their own; see docs/performance.md):")
    for hop, ms in report["hops_p50_ms"].items():
        lines.append(f"  {hop:30} {ms:>7.3f}")
    lines.append("")
    lines.append("durability: " + json.dumps(report["durability"]))
    lines.append("targets: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in report["targets_met"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
