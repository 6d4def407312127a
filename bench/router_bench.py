"""The router's own share of a Chat: its latency split into upstream, textgen hop, queue cycle and the router itself.

`python -m bench.router_bench` starts the local mesh (textgen attached to bench.upstream) and measures, one
client at a time: the upstream directly, textgen's Generate directly, the queue's durable cycle as a router
drives it (Submit → AcquireJob → CompleteJob), and the router's Chat. The router's overhead is what Chat
costs beyond the queue cycle and the textgen call; its CPU share is measured in-process as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw.router.v1 import router_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_common.auth import Authenticator, TokenSigner, TokenVerifier
from aigw_common.config import AuthConfig, RateLimit, RateLimitConfig, parse_config
from aigw_common.ferretdb import free_port
from aigw_common.mesh import Mesh, write_config
from bench.run import (
    JWT_SECRET,
    MAX_TOKENS,
    MESSAGES,
    MODEL,
    Run,
    finish,
    mesh_config,
    sequential_grpc,
    sequential_http,
    upstream,
)
from services.router import convert
from services.router.catalog import ModelCatalog
from services.router.chat import parse_priority, submission, validate_chat
from services.router.gate import CallMeta, Gate
from services.router.ratelimit import RateLimiter

WORKER = "router-bench-" + uuid.uuid4().hex[:6]
CHAT = common_pb2.ChatJob(
    messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES],
    params=common_pb2.GenerationParams(max_tokens=MAX_TOKENS),
)


def sequential(name: str, call: Callable[[], object], count: int, warmup: int) -> Run:
    """Times `call` one at a time after a warm-up."""
    run = Run(name, "grpc", 1)
    samples: list[float] = []
    for _ in range(warmup):
        call()
    begin = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        try:
            call()
        except grpc.RpcError:
            run.errors += 1
            continue
        samples.append((time.perf_counter() - t) * 1000)
    return finish(run, samples, time.perf_counter() - begin)


def textgen_direct(address: str, count: int, warmup: int) -> Run:
    with grpc.insecure_channel(address) as channel:
        generate = textgen_pb2_grpc.TextgenServiceStub(channel).Generate
        request = textgen_pb2.GenerateRequest(model=MODEL, chat=CHAT)
        return sequential("textgen Generate direct", lambda: generate(request, timeout=30), count, warmup)


def queue_cycle(address: str, count: int, warmup: int) -> Run:
    """Submit with this worker as owner, acquire the lease, complete: the queue's part of one synchronous Chat."""
    with grpc.insecure_channel(address) as channel:
        jobs = queue_pb2_grpc.QueueServiceStub(channel)
        result = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="hi"), finish_reason="stop")

        def cycle() -> None:
            job = jobs.Submit(queue_pb2.SubmitRequest(model=MODEL, client_id="bench", owner_id=WORKER, chat=CHAT), timeout=30).job
            granted = jobs.AcquireJob(
                queue_pb2.AcquireJobRequest(worker_id=WORKER, request_id=job.request_id, wait_ms=5000), timeout=30
            )
            done = queue_pb2.CompleteJobRequest(lease_id=granted.lease.lease_id, request_id=job.request_id, chat_result=result)
            jobs.CompleteJob(done, timeout=30)

        return sequential("queue cycle (submit, acquire, complete)", cycle, count, warmup)


def router_cpu_us(count: int) -> float:
    """Microseconds of router CPU per request before any I/O: credential, rate limit, validation, job building."""
    cfg = parse_config({"models": {MODEL: {"kind": "chat"}}}, env={})
    auth = AuthConfig(jwt_secret=JWT_SECRET)
    token, _ = TokenSigner(auth, JWT_SECRET).issue_access("bench", "user")
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


def breakdown(runs: dict[str, Run], cpu_us: float) -> dict[str, Any]:
    chat, queue, textgen, direct = (runs[k] for k in ("chat", "queue", "textgen", "direct"))
    return {
        "router_overhead_p50_ms": round(chat.p50_ms - queue.p50_ms - textgen.p50_ms, 3),
        "router_overhead_p99_ms": round(chat.p99_ms - queue.p99_ms - textgen.p99_ms, 3),
        "gateway_added_p50_ms": round(chat.p50_ms - direct.p50_ms, 3),
        "queue_cycle_p50_ms": round(queue.p50_ms, 3),
        "textgen_hop_p50_ms": round(textgen.p50_ms - direct.p50_ms, 3),
        "router_cpu_us_per_request": round(cpu_us, 1),
    }


def measure(requests: int) -> dict[str, Any]:
    up_port = free_port()
    warm = max(50, requests // 10)
    with tempfile.TemporaryDirectory(prefix="aigw-router-bench-") as tmp, upstream(up_port):
        up_url = f"http://127.0.0.1:{up_port}"
        mesh = Mesh(write_config(Path(tmp) / "bench.yaml", mesh_config(Path(tmp) / "data", up_url)))
        mesh.start(timeout=180)
        try:
            cfg = mesh.cfg
            token, _ = TokenSigner(cfg.auth, JWT_SECRET).issue_access("bench", "user")
            body = {"model": "upstream", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            runs = {
                "direct": sequential_http("upstream direct", f"{up_url}/v1/chat/completions", body, {}, requests, warm),
                "textgen": textgen_direct(cfg.backend("upstream").address, requests, warm),
                "queue": queue_cycle(cfg.services.queue.address, requests, warm),
                "chat": sequential_grpc(cfg.services.router.address, token, requests, warm),
            }
        finally:
            mesh.stop()
    return {"breakdown": breakdown(runs, router_cpu_us(requests * 5)), "runs": [asdict(r) for r in runs.values()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="router_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per measured path")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = measure(args.requests)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
