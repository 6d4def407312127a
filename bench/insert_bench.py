"""The queue's hot inserts through pymongo and on the wire, against the same embedded FerretDB.

`python -m bench.insert_bench` starts a FerretDB of its own in a temporary directory and drives the
store's `InsertBatcher` with each writer in turn (`DriverInserts`: pymongo's `insert_one` /
`insert_many`; `WireInserts`: one OP_MSG `insert` per batch), one insert at a time and `--batch` at a
time, for `--rounds` alternating rounds. It prints, per round and writer, the p50 of an insert and
the CPU this process spent per insert (the queue's share; FerretDB's own is the same either way).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path

import uvloop
from bson import Binary

from aigw_server.queue.store import JOBS, DriverInserts, InsertBatcher, QueueStore, WireInserts, wire_socket
from aigw_server.queue.store_wire import WireConnection
from aigw_server.runtime.config import DatabaseConfig
from harness.ferretdb import FerretDBProcess, ensure_built

REPO = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _job() -> dict[str, object]:
    """A job document of the size and shape Submit writes."""
    return {
        "_id": uuid.uuid4().hex,
        "model": "bench-model",
        "kind": 1,
        "priority": 2,
        "seq": 1,
        "client_id": "bench",
        "subject": "user:bench",
        "owner_id": "router-1",
        "payload": Binary(os.urandom(200)),
    }


async def _measure(batcher: InsertBatcher, inserts: int, batch: int) -> tuple[float, float]:
    """The p50 of an insert (ms) and this process's CPU per insert (ms), `batch` inserts at a time."""
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await batcher.insert(_job())
        latencies.append(time.perf_counter() - started)

    cpu = _cpu()
    for _ in range(inserts // batch):
        await asyncio.gather(*(one() for _ in range(batch)))
    cpu = _cpu() - cpu
    latencies.sort()
    return latencies[len(latencies) // 2] * 1000, cpu / len(latencies) * 1000


async def run(inserts: int, rounds: int, batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aigw-insert-bench-") as tmp:
        store_process = FerretDBProcess(ensure_built(REPO), Path(tmp) / "db")
        store_process.start()
        try:
            store = QueueStore(DatabaseConfig(uri=store_process.uri, name="bench"), Path(tmp), 86_400.0)
            await store.connect()
            socket = wire_socket(store_process.uri)
            assert socket is not None
            collection = store.coll(JOBS)
            writers = {
                "pymongo": InsertBatcher(DriverInserts(collection)),
                "wire": InsertBatcher(WireInserts(collection, WireConnection(socket, connect_timeout=2.0, reply_timeout=30.0))),
            }
            try:
                for batcher in writers.values():  # warm-up: connections made, code paths loaded
                    await _measure(batcher, 100, 1)
                print(f"{'round':>5} {'writer':>8} {'at a time':>9} {'p50 ms':>8} {'CPU ms/insert':>14}")
                for round_ in range(1, rounds + 1):
                    for name, batcher in writers.items():
                        for size in (1, batch):
                            p50, cpu = await _measure(batcher, inserts, size)
                            print(f"{round_:>5} {name:>8} {size:>9} {p50:>8.3f} {cpu:>14.3f}")
            finally:
                for batcher in writers.values():
                    await batcher.close()
                await store.close()
        finally:
            store_process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=2000, help="inserts per writer and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10, help="inserts at a time in the concurrent runs")
    args = parser.parse_args()
    uvloop.run(run(args.inserts, args.rounds, args.batch))


if __name__ == "__main__":
    main()
