"""The router's own share of a Chat: its latency split into upstream, textgen hop, queue cycle and the router itself.

`python -m bench.router_bench` starts the local mesh (textgen attached to bench.upstream) and measures, one
client at a time: the upstream directly, textgen's Generate directly, the queue's durable owner cycle as the
router drives it (Submit with accept_lease, then CompleteJob), and the router's Chat. The router's overhead is
what Chat costs beyond the queue cycle and the engine call, which the router makes itself; textgen's Generate
is reported beside it as the hop a chat takes with `routing.direct_engines: false`. It also reports the CPU
each process spends per Chat, and the router's CPU per request before any I/O (credential, rate limit,
validation), measured in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import psutil

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2_grpc
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.router import convert
from aigw_server.router.catalog import ModelCatalog
from aigw_server.router.chat import parse_priority, submission, validate_chat
from aigw_server.router.gate import CallMeta, Gate
from aigw_server.router.ratelimit import RateLimiter
from aigw_server.runtime.auth import Authenticator, TokenSigner, TokenVerifier
from aigw_server.runtime.authz import MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import AuthConfig, GatewayConfig, RateLimit, RateLimitConfig, parse_config
from bench.queue_bench import owner_cycle_with_lease
from bench.report import emit
from bench.run import (
    JWT_SECRET,
    MAX_TOKENS,
    MESSAGES,
    MODEL,
    Run,
    finish,
    mesh_spec,
    sequential_grpc,
    sequential_http,
    upstream,
)
from harness.ferretdb import free_port
from harness.mesh import Mesh

WORKER = "router-bench-" + uuid.uuid4().hex[:6]
CHAT = common_pb2.ChatJob(
    messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES],
    params=common_pb2.GenerationParams(max_tokens=MAX_TOKENS),
)


async def sequential(name: str, call: Callable[[], Awaitable[object]], count: int, warmup: int) -> Run:
    """Times `call` one at a time after a warm-up (every path uses the same asyncio gRPC client)."""
    run = Run(name, "grpc", 1)
    samples: list[float] = []
    for _ in range(warmup):
        await call()
    begin = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        try:
            await call()
        except grpc.aio.AioRpcError:
            run.errors += 1
            continue
        samples.append((time.perf_counter() - t) * 1000)
    return finish(run, samples, time.perf_counter() - begin)


async def paths(cfg: GatewayConfig, token: str, count: int, warmup: int) -> dict[str, Run]:
    """textgen's Generate, the queue's owner cycle and the router's Chat, each measured on its own."""
    metadata = (("authorization", f"Bearer {token}"),)
    chat = router_pb2.ChatRequest(model=MODEL, messages=CHAT.messages, max_tokens=MAX_TOKENS)
    generate = textgen_pb2.GenerateRequest(model=MODEL, chat=CHAT)
    as_router = MeshTls.load(cfg.tls_path, "router")  # the mesh's own identity: internal ports are mTLS
    async with (
        make_channel(cfg.backend("upstream").address, as_router, "textgen") as tg,
        make_channel(cfg.services.queue.address, as_router, "queue") as qu,
        grpc.aio.insecure_channel(cfg.services.router.address) as ro,
    ):
        textgen = textgen_pb2_grpc.TextgenServiceStub(tg)
        queue = queue_pb2_grpc.QueueServiceStub(qu)
        router = router_pb2_grpc.RouterServiceStub(ro)
        return {
            "textgen": await sequential("textgen Generate direct", lambda: textgen.Generate(generate), count, warmup),
            "queue": await sequential("queue owner cycle", lambda: owner_cycle_with_lease(queue, WORKER), count, warmup),
            "chat": await sequential("router Chat", lambda: router.Chat(chat, metadata=metadata), count, warmup),
        }


def cpu_per_request(mesh: Mesh, run: Callable[[], Run], programs: tuple[str, ...]) -> tuple[Run, dict[str, float]]:
    """Runs `run` and returns it with the CPU milliseconds each program spent per successful request."""
    procs = {name: psutil.Process(pid) for name, pid in mesh.pids().items() if name in programs}

    def used() -> dict[str, float]:
        return {name: p.cpu_times().user + p.cpu_times().system for name, p in procs.items()}

    before = used()
    result = run()
    after = used()
    done = max(1, result.requests - result.errors)
    return result, {name: round((after[name] - before[name]) * 1000 / done, 3) for name in procs}


def router_cpu_us(count: int) -> float:
    """Microseconds of router CPU per request before any I/O: credential, rate limit, validation, job building."""
    cfg = parse_config({"models": {MODEL: {"kind": "chat"}}}, env={})
    auth = AuthConfig(jwt_secret=JWT_SECRET)
    token, _ = TokenSigner(auth, JWT_SECRET).issue_access("admin", "user")
    gate = Gate(Authenticator(TokenVerifier(auth, JWT_SECRET), None), RateLimiter(RateLimitConfig(default=RateLimit(0, 0))))
    catalog = ModelCatalog(cfg.models)
    meta = CallMeta(authorization=f"Bearer {token}", priority="high")
    request = convert.chat_input(router_pb2.ChatRequest(model=MODEL, messages=CHAT.messages, max_tokens=MAX_TOKENS))

    async def many() -> float:
        begin = time.perf_counter()
        for _ in range(count):
            await gate.admit(meta)
            spec = validate_chat(request, catalog)
            submission(parse_priority(meta.priority, ""), False, "", 0.0)
            convert.chat_job(spec)
        return (time.perf_counter() - begin) / count * 1e6

    return asyncio.run(many())


def breakdown(runs: dict[str, Run], cpu_us: float, cpu_ms: dict[str, float]) -> dict[str, Any]:
    chat, queue, textgen, direct = (runs[k] for k in ("chat", "queue", "textgen", "direct"))
    return {
        # The router calls the engine itself (routing.direct_engines): the textgen hop is off the chat's path.
        "router_overhead_p50_ms": round(chat.p50_ms - queue.p50_ms - direct.p50_ms, 3),
        "gateway_added_p50_ms": round(chat.p50_ms - direct.p50_ms, 3),
        "gateway_added_p99_ms": round(chat.p99_ms - direct.p99_ms, 3),
        "queue_cycle_p50_ms": round(queue.p50_ms, 3),
        "textgen_hop_p50_ms": round(textgen.p50_ms - direct.p50_ms, 3),
        "router_domain_cpu_us_per_request": round(cpu_us, 1),
        "cpu_ms_per_chat": cpu_ms,
    }


def measure(requests: int) -> dict[str, Any]:
    up_port = free_port()
    warm = max(50, requests // 10)
    with tempfile.TemporaryDirectory(prefix="aigw-router-bench-") as tmp, upstream(up_port):
        up_url = f"http://127.0.0.1:{up_port}"
        mesh = Mesh(mesh_spec(Path(tmp) / "data", up_url).write(Path(tmp) / "bench.yaml"))
        mesh.start(timeout=180)
        try:
            cfg = mesh.cfg
            token, _ = TokenSigner(cfg.auth, JWT_SECRET).issue_access("admin", "user")
            body = {"model": "upstream", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            runs = {"direct": sequential_http("upstream direct", f"{up_url}/v1/chat/completions", body, {}, requests, warm)}
            runs.update(asyncio.run(paths(cfg, token, requests, warm)))
            programs = ("router", "queue", "textgen-upstream", "ferretdb")
            runs["chat_cpu"], cpu_ms = cpu_per_request(
                mesh, lambda: sequential_grpc(cfg.services.router.address, token, requests, 0), programs
            )
        finally:
            mesh.stop()
    report = breakdown(runs, router_cpu_us(requests * 5), cpu_ms)
    return {"breakdown": report, "runs": [asdict(r) for r in runs.values()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="router_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per measured path")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = measure(args.requests)
    emit(report, args.out)


if __name__ == "__main__":
    main()
