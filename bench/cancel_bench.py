"""How fast a client that goes away stops its job: `python -m bench.cancel_bench [--tries 20]`.

Starts the local mesh (every service a process, textgen attached to a bench.upstream that streams 3000
tokens, 2 ms apart: 6 s of "engine" time per answer). Each try opens a streamed chat, reads it for about
0.5 s and leaves: over REST the client closes its connection to the edge, over gRPC it cancels StreamChat.
For each try it reports how long after the client left the engine's connection closed (the upstream
records the moment), how long until the job was stored CANCELLED, and the engine time the answer used
out of the 6 s it would have taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import orjson

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.runtime.auth import TokenSigner
from bench.report import emit
from bench.run import JWT_SECRET, MODEL, REPO, mesh_spec
from harness.ferretdb import free_port
from harness.mesh import Mesh

TOKENS = 3000
TOKEN_MS = 2.0
READ_SECONDS = 0.5
TERMINAL = (common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED)


@contextmanager
def slow_upstream(port: int) -> Iterator[str]:
    """A bench.upstream streaming TOKENS tokens TOKEN_MS apart."""
    args = ["--port", str(port), "--answer", "tok", "--tokens", str(TOKENS), "--chunk-delay-ms", str(TOKEN_MS)]
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", *args], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Probe:
    """One mesh, its upstream and a router stub; runs the tries."""

    def __init__(self, mesh: Mesh, upstream_url: str, token: str) -> None:
        self.mesh = mesh
        self.upstream_url = upstream_url
        self.token = token
        self.channel = grpc.aio.insecure_channel(mesh.cfg.services.router.address)
        self.router = router_pb2_grpc.RouterServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def gone_at(self, request_id: str) -> float:
        """When the upstream saw the engine connection of `request_id` close (wall clock)."""
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                gone = (await client.get(f"{self.upstream_url}/stats")).json()["gone"]
                if request_id in gone:
                    return float(gone[request_id])
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the engine request of {request_id} did not end")
                await asyncio.sleep(0.01)

    async def final(self, request_id: str) -> common_pb2.Job:
        deadline = time.monotonic() + 10
        while True:
            reply = await self.router.GetRequest(router_pb2.GetRequestRequest(request_id=request_id), metadata=self.metadata)
            job: common_pb2.Job = reply.request
            if job.state in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"{request_id} did not end")
            await asyncio.sleep(0.01)

    async def rest(self) -> tuple[str, float]:
        """A streamed /v1/chat/completions over a raw connection, closed after READ_SECONDS of tokens."""
        edge = urlsplit(self.mesh.edge_url)
        reader, writer = await asyncio.open_connection(edge.hostname, edge.port)
        body = orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "talk"}], "max_tokens": TOKENS, "stream": True}
        )
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {self.token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_id = next(
            line.split(":", 1)[1].strip() for line in headers.split("\r\n") if line.lower().startswith("x-request-id")
        )
        deadline = time.monotonic() + READ_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()  # the socket closes only when the loop next runs
        return request_id, time.time()

    async def grpc(self) -> tuple[str, float]:
        """A StreamChat read for READ_SECONDS, then cancelled."""
        request = router_pb2.StreamChatRequest(
            model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="talk")], max_tokens=TOKENS
        )
        call = self.router.StreamChat(request, metadata=self.metadata)
        first = await call.read()
        if not isinstance(first, router_pb2.StreamChatResponse):
            raise RuntimeError("StreamChat ended before its first event")
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            await call.read()
        call.cancel()
        return first.request_id, time.time()

    async def tries(self, how: str, count: int) -> dict[str, Any]:
        engine_ms, stored_ms, used_s, states = [], [], [], []
        for _ in range(count):
            request_id, left_at = await (self.rest() if how == "rest" else self.grpc())
            gone = await self.gone_at(request_id)
            job = await self.final(request_id)
            finished = job.timings.finished_at.ToNanoseconds() / 1e9
            engine_ms.append((gone - left_at) * 1000)
            stored_ms.append((finished - left_at) * 1000)
            used_s.append(gone - job.timings.started_at.ToNanoseconds() / 1e9)
            states.append(common_pb2.JobState.Name(job.state))
            await asyncio.sleep(0.1)
        return {
            "tries": count,
            "states": {s: states.count(s) for s in sorted(set(states))},
            "engine_closed_ms": summary(engine_ms),
            "cancelled_stored_ms": summary(stored_ms),
            "engine_seconds_used": round(statistics.mean(used_s), 2),
            "engine_seconds_full_answer": TOKENS * TOKEN_MS / 1000,
        }


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(samples), 1), "max": round(max(samples), 1)}


async def probe(mesh: Mesh, upstream_url: str, tries: int) -> dict[str, Any]:
    token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
    runner = Probe(mesh, upstream_url, token)
    try:
        return {
            "rest_stream_closed": await runner.tries("rest", tries),
            "grpc_stream_cancelled": await runner.tries("grpc", tries),
        }
    finally:
        await runner.channel.close(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cancel_bench", description=__doc__)
    parser.add_argument("--tries", type=int, default=20, help="tries per path (REST, gRPC)")
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aigw-cancel-bench-") as tmp, slow_upstream(free_port()) as url:
        mesh = Mesh(mesh_spec(Path(tmp) / "data", url).write(Path(tmp) / "bench.yaml"))
        mesh.start(timeout=180)
        try:
            report = asyncio.run(probe(mesh, url, args.tries))
        finally:
            mesh.stop()
    emit(report, args.out)


if __name__ == "__main__":
    main()
