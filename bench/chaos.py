"""`make chaos`: mixed load while a fault schedule SIGKILLs router, queue, textgen, its model server and the database.

Every logical client request carries an idempotency key and is retried with it until it gets a
definite answer, as a careful client would. Afterwards the store (through the queue's own API)
and the model server's journal are checked: every admitted request ended exactly once, none was
lost, none ran twice at the same time, refused requests were not stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.auth import TokenSigner
from aigw_server.runtime.config import RateLimit
from aigw_server.runtime.enums import PRIORITIES
from bench.documents import page_png
from harness.mesh import Mesh
from harness.mesh_config import Auth, ChatModel, MeshSpec, OcrModel, QueueKnobs, SupervisedEngine, TesseractOcr

JWT_SECRET = "chaos-secret-" + "c" * 40
MODEL = "chaos-chat"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
SOAK_SLOT_SECONDS = 40.0  # in long runs, one kill about every 40 s
MODES = ("sync", "stream", "async", "ocr")


@dataclass
class Outcome:
    """What one client saw for one logical request."""

    key: str
    mode: str
    priority: str
    request_id: str = ""
    refused: int = 0
    final: str = ""
    tries: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Kill:
    """One fault and how long the mesh took to recover from it."""

    program: str
    at: float
    recovery_seconds: float = -1.0
    error: str = ""


def mesh_spec(data: Path, journal: Path) -> MeshSpec:
    """The mesh under fault: textgen supervises a slow bench.upstream (journaling every run), short leases, small queues."""
    model_server = (
        sys.executable,
        "-m",
        "bench.upstream",
        "--port",
        "{port}",
        "--tokens",
        "12",
        "--chunk-delay-ms",
        "25",
        "--delay-ms",
        "250",
        "--journal",
        str(journal),
    )
    return MeshSpec(
        data_dir=data,
        auth=Auth(JWT_SECRET, "chaos-admin-password"),
        rate_limit=RateLimit(requests_per_minute=1_000_000, burst=100_000),
        queue=QueueKnobs(lease_ttl_seconds=4, timeout=150, max_waiting=12),
        models=(
            ChatModel(MODEL, max_concurrent=4, max_waiting=12, default_max_tokens=12),
            OcrModel("tesseract", max_concurrent=2, max_waiting=6),
        ),
        backends=(
            SupervisedEngine("gpu-0", "openai", models=(MODEL,), capacity=8, command=model_server, startup_timeout_seconds=30),
            TesseractOcr(),
        ),
    )


class Client:
    """A careful client: retries with the same idempotency key until it has a definite answer.

    A 429 at admission is definite (refused, nothing stored); anything else that is not a final
    state (503, a dropped connection, a 5xx) is retried with the same key, or polled by id once
    the request id is known.
    """

    def __init__(self, base: str, token: str, deadline: float) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.deadline = deadline
        self.page = page_png(7, height=200)

    async def run(self, http: httpx.AsyncClient, out: Outcome) -> None:
        while time.monotonic() < self.deadline:
            out.tries += 1
            try:
                done = await getattr(self, f"_{out.mode}")(http, out)
            except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
                out.notes.append(type(exc).__name__)
                done = False
            if done:
                return
            await asyncio.sleep(0.5 + random.random())

    def _body(self, out: Outcome, **extra: Any) -> dict[str, Any]:
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"chaos {out.key}"}],
            "idempotency_key": out.key,
            "priority": out.priority,
            **extra,
        }

    def _settle(self, status: int, body: dict[str, Any], out: Outcome) -> bool:
        """True when the answer is definite: a final state, or a refusal at admission."""
        out.request_id = body.get("request_id") or out.request_id
        if status == 200 and body.get("status") in TERMINAL:
            out.final = body["status"]
            return True
        if status == 429 and not out.request_id:
            out.refused += 1
            out.final = "REFUSED"
            return True
        return False

    async def _poll(self, http: httpx.AsyncClient, out: Outcome) -> bool:
        r = await http.get(f"{self.base}/v1/requests/{out.request_id}", headers=self.headers)
        if r.status_code == 200:
            state = r.json().get("request", {}).get("state", "")
            if state in TERMINAL:
                out.final = state
                return True
        return False

    async def _sync(self, http: httpx.AsyncClient, out: Outcome) -> bool:
        if out.request_id and await self._poll(http, out):
            return True
        r = await http.post(f"{self.base}/api/chat", json=self._body(out), headers=self.headers)
        return self._settle(r.status_code, _json(r), out)

    async def _async(self, http: httpx.AsyncClient, out: Outcome) -> bool:
        if not out.request_id:
            r = await http.post(f"{self.base}/api/chat", json=self._body(out, **{"async": True}), headers=self.headers)
            self._settle(r.status_code, _json(r), out)
        while out.request_id and time.monotonic() < self.deadline:
            if await self._poll(http, out):
                return True
            await asyncio.sleep(0.5)
        return False

    async def _stream(self, http: httpx.AsyncClient, out: Outcome) -> bool:
        if out.request_id and await self._poll(http, out):
            return True
        async with http.stream("POST", f"{self.base}/api/chat/stream", json=self._body(out), headers=self.headers) as r:
            if r.status_code != 200:
                return self._settle(r.status_code, json.loads(await r.aread() or b"{}"), out)
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    out.request_id = event.get("request_id") or out.request_id
                    if event.get("status") in TERMINAL:
                        out.final = event["status"]
        return bool(out.final)

    async def _ocr(self, http: httpx.AsyncClient, out: Outcome) -> bool:
        if out.request_id and await self._poll(http, out):
            return True
        url = f"{self.base}/api/ocr?model=tesseract&languages=eng&idempotency_key={out.key}&priority={out.priority}"
        r = await http.post(url, content=self.page, headers={**self.headers, "Content-Type": "image/png"})
        return self._settle(r.status_code, _json(r), out)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


async def load(base: str, token: str, seconds: float, clients: int, settle: float) -> list[Outcome]:
    deadline = time.monotonic() + seconds + settle
    stop_new = time.monotonic() + seconds
    client = Client(base, token, deadline)
    outcomes: list[Outcome] = []

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as http:
            while time.monotonic() < stop_new:
                out = Outcome(f"k{n}-{uuid.uuid4().hex[:10]}", random.choice(MODES), random.choice(PRIORITIES))
                outcomes.append(out)
                await client.run(http, out)
                await asyncio.sleep(random.random() * 0.3)

    await asyncio.gather(*(worker(n) for n in range(clients)))
    return outcomes


def model_server_pid(mesh: Mesh, textgen: str) -> int:
    children = psutil.Process(mesh.pids()[textgen]).children()
    if not children:
        raise RuntimeError("the textgen service has no model server running")
    return int(children[0].pid)


def faults(mesh: Mesh, textgen: str, seconds: float, kills: list[Kill], start: float) -> None:
    """Kills each target in turn at random moments (round after round in longer runs); records recovery times."""
    order = ["router", "queue", textgen, "model-server", "ferretdb"]
    slot = min(seconds / (len(order) + 1), SOAK_SLOT_SECONDS)
    rounds = max(1, int(seconds / (slot * len(order))))
    for i, target in enumerate(order * rounds):
        time.sleep(max(0.0, start + slot * (i + 0.5) + random.uniform(0, slot * 0.5) - time.monotonic()))
        kill = Kill(target, round(time.monotonic() - start, 1))
        kills.append(kill)
        try:
            if target == "model-server":
                pid = model_server_pid(mesh, textgen)
                old_textgen = mesh.pids()[textgen]
                psutil.Process(pid).send_signal(signal.SIGKILL)
                kill.recovery_seconds = round(wait_model_server(mesh, textgen, old_textgen, pid), 2)
            else:
                old = mesh.kill(target, signal.SIGKILL)
                kill.recovery_seconds = round(mesh.wait_restarted(target, old, timeout=90), 2)
        except (RuntimeError, TimeoutError, KeyError) as exc:
            kill.error = str(exc)


def wait_model_server(mesh: Mesh, textgen: str, textgen_pid: int, old_pid: int, timeout: float = 60) -> float:
    begin = time.monotonic()
    address = mesh.grpc_addresses()[textgen]
    while time.monotonic() - begin < timeout:
        try:
            children = psutil.Process(mesh.pids()[textgen]).children()
        except (psutil.Error, KeyError):
            children = []
        if children and children[0].pid != old_pid and mesh.health(textgen, address) == "SERVING":
            return time.monotonic() - begin
        time.sleep(0.2)
    raise TimeoutError("the model server did not come back")


def stored_jobs(mesh: Mesh) -> list[common_pb2.Job]:
    jobs: list[common_pb2.Job] = []
    token = ""
    with mesh.open("queue", identity="admin") as channel:
        stub = queue_pb2_grpc.QueueServiceStub(channel)
        while True:
            page = stub.ListJobs(queue_pb2.ListJobsRequest(page_size=500, page_token=token), timeout=30)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs


def overlapping_runs(journal: Path) -> list[str]:
    """Request ids the model server ran twice at the same time (from its start/end journal)."""
    open_runs: Counter[str] = Counter()
    overlaps: set[str] = set()
    if not journal.exists():
        return []
    for line in journal.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1]:
            continue
        event, rid = parts[0], parts[1]
        if event == "start":
            if open_runs[rid]:
                overlaps.add(rid)
            open_runs[rid] += 1
        elif event == "end" and open_runs[rid]:
            open_runs[rid] -= 1
        elif event == "boot":
            open_runs.clear()
    return sorted(overlaps)


def verdict(outcomes: list[Outcome], jobs: list[common_pb2.Job], overlaps: list[str], kills: list[Kill]) -> dict[str, Any]:
    by_key: dict[str, list[common_pb2.Job]] = defaultdict(list)
    for job in jobs:
        if job.idempotency_key:
            by_key[job.idempotency_key].append(job)
    state = common_pb2.JobState.Name
    admitted = [o for o in outcomes if by_key.get(o.key)]
    lost = [o.key for o in outcomes if o.request_id and not by_key.get(o.key)]
    lost += [k for k, js in by_key.items() if any(state(j.state) not in TERMINAL for j in js)]
    duplicated = [k for k, js in by_key.items() if len(js) > 1] + overlaps
    refused_stored = [o.key for o in outcomes if o.final == "REFUSED" and by_key.get(o.key)]
    failed = Counter(j.error.code or "UNKNOWN" for js in by_key.values() for j in js if state(j.state) == "FAILED")
    return {
        "requests": len(outcomes),
        "admitted": len(admitted),
        "completed": sum(1 for js in by_key.values() for j in js if state(j.state) == "SUCCEEDED"),
        "failed_by_reason": dict(failed),
        "refused_429": sum(1 for o in outcomes if o.final == "REFUSED"),
        "refused_but_stored": len(refused_stored),
        "client_unresolved": sum(1 for o in outcomes if not o.final and o.request_id),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "lost_keys": lost[:20],
        "duplicated_keys": duplicated[:20],
        "retried_jobs": sum(1 for js in by_key.values() for j in js if j.attempt > 1),
        "by_mode": dict(Counter(o.mode for o in outcomes)),
        "kills": [asdict(k) for k in kills],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60, help="load duration (the soak mode: 1800 or more)")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--settle", type=float, default=90, help="time after the load for every request to end")
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aigw-chaos-") as tmp:
        journal = Path(tmp) / "model-server.journal"
        mesh = Mesh(mesh_spec(Path(tmp) / "data", journal).write(Path(tmp) / "chaos.yaml"))
        mesh.start(timeout=180)
        try:
            textgen = "textgen-gpu-0"
            token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
            kills: list[Kill] = []
            start = time.monotonic()
            fault_thread = threading.Thread(target=faults, args=(mesh, textgen, args.seconds, kills, start), daemon=True)
            fault_thread.start()
            outcomes = asyncio.run(load(mesh.edge_url, token, args.seconds, args.clients, args.settle))
            fault_thread.join(timeout=120)
            mesh.wait_ready(120)
            jobs = stored_jobs(mesh)
            figures = verdict(outcomes, jobs, overlapping_runs(journal), kills)
        finally:
            mesh.stop()
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    if figures["lost"] or figures["duplicated"] or figures["refused_but_stored"]:
        raise SystemExit("chaos: requests were lost or duplicated")


if __name__ == "__main__":
    main()
