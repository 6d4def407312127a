"""Crashes with real processes: the queue, a worker, or FerretDB is SIGKILLed mid-run; all 50 jobs end SUCCEEDED exactly once."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from pymongo import MongoClient

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port, health_status, wait_serving

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
MODEL = "crash-model"
JOBS = 50
QUEUE_SERVICE = "aigw.queue.v1.QueueService"
PRIORITIES = (common_pb2.PRIORITY_LOW, common_pb2.PRIORITY_NORMAL, common_pb2.PRIORITY_HIGH)
Doc = dict[str, Any]


@dataclass
class Mesh:
    """The processes of one crash test: a queue service and its workers, on one database."""

    tmp: Path
    uri: str
    db: str
    port: int = field(default_factory=free_port)
    queue: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        config = {
            "mesh_tls": {"mode": "plaintext"},  # the workers are test clients on loopback
            "database": {"uri": self.uri, "name": self.db},
            "services": {"queue": {"port": self.port, "metrics_port": 0}},
            "queue": {"max_waiting": 60, "lease_ttl_seconds": 3, "orphan_grace_seconds": 0.5, "sweep_interval_seconds": 0.1},
            "models": {MODEL: {"kind": "chat", "max_concurrent": 10}},
            "logging": {"level": "WARNING"},
        }
        path = self.tmp / "queue.yaml"
        path.write_text(yaml.safe_dump(config))
        return {**os.environ, "AIGW_CONFIG": str(path), "PYTHONPATH": f"{REPO}:{REPO / 'gen'}"}

    def start_queue(self) -> None:
        with open(self.tmp / "queue.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.queue = subprocess.Popen(
                [sys.executable, "-m", "aigw_server.queue"], cwd=REPO, env=self.env(), stdout=log, stderr=log
            )
        wait_serving(self.address, 60)

    def kill_queue(self) -> None:
        assert self.queue is not None
        self.queue.send_signal(signal.SIGKILL)
        self.queue.wait()

    def start_worker(self, name: str, concurrency: int = 5, work_ms: int = 300) -> None:
        args = [self.address, MODEL, name, str(self.tmp), "--concurrency", str(concurrency), "--work-ms", str(work_ms)]
        command = [sys.executable, "-m", "tests.integration.queue.crash_worker", *args]
        self.workers[name] = subprocess.Popen(command, cwd=REPO, env=self.env(), stderr=subprocess.DEVNULL)

    def in_flight(self) -> set[str]:
        return set(self.lines("started")) - set(self.lines("done"))

    def lines(self, suffix: str) -> list[str]:
        return [line.split()[1] for f in self.tmp.glob(f"*.{suffix}") for line in f.read_text().splitlines()]

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.queue]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def mesh_on(tmp_path: Path, db_name: str) -> Iterator[Callable[[str], Mesh]]:
    """Makes the test's mesh on a database URI, and stops its processes afterwards."""
    made: list[Mesh] = []

    def make(uri: str) -> Mesh:
        made.append(Mesh(tmp_path, uri, db_name))
        return made[-1]

    yield make
    for mesh in made:
        mesh.stop()


def submit_all(mesh: Mesh) -> list[str]:
    with grpc.insecure_channel(mesh.address) as channel:
        stub = queue_pb2_grpc.QueueServiceStub(channel)
        ids = []
        for i in range(JOBS):
            chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content=f"job {i}")])
            reply = stub.Submit(queue_pb2.SubmitRequest(model=MODEL, chat=chat, priority=PRIORITIES[i % 3]), timeout=10)
            ids.append(reply.job.request_id)
        return ids


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def outcomes(mesh: Mesh) -> list[Doc]:
    client: MongoClient[Doc] = MongoClient(mesh.uri, directConnection=True, serverSelectionTimeoutMS=2000)
    with client:
        return list(client[mesh.db].job_outcomes.find({}, {"state": 1, "attempt_errors": 1}))


def assert_each_succeeded_exactly_once(mesh: Mesh, ids: list[str], spared: int = 0) -> list[Doc]:
    """Every job has one SUCCEEDED outcome; no completion was acknowledged twice; at most `spared` went unlogged."""
    wait_for(lambda: len(outcomes(mesh)) == JOBS, 90, "all jobs to finish")
    stored = outcomes(mesh)
    assert sorted(d["_id"] for d in stored) == sorted(ids)
    assert {d["state"] for d in stored} == {common_pb2.SUCCEEDED}
    completions = collections.Counter(mesh.lines("done"))
    assert [rid for rid, n in completions.items() if n > 1] == [], "a completion was acknowledged twice"
    assert set(completions) <= set(ids)
    assert len(completions) >= JOBS - spared
    return stored


def test_killing_the_queue_loses_and_duplicates_nothing(mesh_on: Callable[[str], Mesh], ferretdb: FerretDBProcess) -> None:
    mesh = mesh_on(ferretdb.uri)
    mesh.start_queue()
    ids = submit_all(mesh)
    mesh.start_worker("w1")
    mesh.start_worker("w2")
    wait_for(lambda: len(mesh.lines("done")) >= 10 and bool(mesh.in_flight()), 30, "completions, with jobs in flight")
    mesh.kill_queue()
    running_at_kill = mesh.in_flight()
    time.sleep(0.3)
    mesh.start_queue()
    stored = assert_each_succeeded_exactly_once(mesh, ids)
    assert running_at_kill, "the kill hit jobs in flight"
    survived = [d for d in stored if d["_id"] in running_at_kill and not d.get("attempt_errors")]
    assert survived, "jobs running across the restart kept their leases and finished in their first attempt"


def test_killing_a_worker_mid_job_hands_its_jobs_to_another(mesh_on: Callable[[str], Mesh], ferretdb: FerretDBProcess) -> None:
    mesh = mesh_on(ferretdb.uri)
    mesh.start_queue()
    ids = submit_all(mesh)
    mesh.start_worker("victim", work_ms=1500)
    wait_for(lambda: len(mesh.lines("started")) >= 5, 30, "the victim to start jobs")
    mesh.workers["victim"].send_signal(signal.SIGKILL)
    mesh.workers["victim"].wait()
    lost = mesh.in_flight()
    assert lost, "the worker died holding leases"
    mesh.start_worker("rescuer", concurrency=10, work_ms=100)
    stored = assert_each_succeeded_exactly_once(mesh, ids, spared=0)
    lapsed = {d["_id"] for d in stored if any(e["code"] == "LEASE_LOST" for e in d.get("attempt_errors", []))}
    assert lapsed == lost, "exactly the jobs the dead worker held were requeued after their leases lapsed"


def test_killing_ferretdb_fails_submits_fast_and_loses_nothing(
    mesh_on: Callable[[str], Mesh], ferretdb_binary: Path, tmp_path: Path
) -> None:
    db = FerretDBProcess(ferretdb_binary, tmp_path / "fdb", log_path=tmp_path / "ferretdb.log")
    db.start()
    try:
        mesh = mesh_on(db.uri)
        mesh.start_queue()
        ids = submit_all(mesh)
        mesh.start_worker("w1")
        mesh.start_worker("w2")
        wait_for(lambda: len(mesh.lines("done")) >= 10, 30, "the first completions")
        db.kill()
        with grpc.insecure_channel(mesh.address) as channel:
            stub = queue_pb2_grpc.QueueServiceStub(channel)
            chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="during the outage")])
            request = queue_pb2.SubmitRequest(model=MODEL, chat=chat, request_id="during-outage")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.Submit(request, timeout=15)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 5
        wait_for(lambda: health_status(mesh.address, QUEUE_SERVICE) == "NOT_SERVING", 15, "health NOT_SERVING")
        db.start()
        wait_serving(mesh.address, 30, QUEUE_SERVICE)
        assert_each_succeeded_exactly_once(mesh, ids)
        client: MongoClient[Doc] = MongoClient(db.uri, directConnection=True)
        with client:
            assert client[mesh.db].jobs.count_documents({"_id": "during-outage"}) == 0
    finally:
        db.stop()
