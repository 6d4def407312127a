"""A worker process for the crash tests: takes orphaned jobs, heartbeats, "works", completes, and logs each completion.

Run as `python -m tests.integration.queue.crash_worker ADDRESS MODEL WORKER_ID LOG_DIR`. It rides out queue
restarts and database outages by retrying; it appends "<worker> <request id>" to LOG_DIR/<worker>.done only
after the queue acknowledged the completion, and to LOG_DIR/<worker>.started when it begins a job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path

import grpc

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc

RETRY_SECONDS = 0.1
COMPLETE_GIVE_UP_SECONDS = 60.0


def append(path: Path, line: str) -> None:
    """Appends one line with a single write (O_APPEND: whole lines even from concurrent tasks)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Worker:
    """Runs `concurrency` job loops against one queue."""

    def __init__(self, stub: queue_pb2_grpc.QueueServiceAsyncStub, args: argparse.Namespace) -> None:
        self.stub = stub
        self.model: str = args.model
        self.worker_id: str = args.worker_id
        self.work_seconds: float = args.work_ms / 1000.0
        self.started = Path(args.log_dir) / f"{self.worker_id}.started"
        self.done = Path(args.log_dir) / f"{self.worker_id}.done"

    async def loop(self) -> None:
        while True:
            request = queue_pb2.AcquireJobRequest(worker_id=self.worker_id, models=[self.model], wait_ms=1000)
            try:
                granted = await self.stub.AcquireJob(request, timeout=5)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if granted.HasField("lease"):
                await self.run(granted.lease)

    async def run(self, lease: queue_pb2.Lease) -> None:
        append(self.started, f"{self.worker_id} {lease.request_id}")
        stop = asyncio.Event()
        beats = asyncio.create_task(self.heartbeat(lease, stop))
        try:
            await asyncio.wait_for(stop.wait(), self.work_seconds * random.uniform(0.5, 1.5))
            return
        except TimeoutError:
            pass
        finally:
            beats.cancel()
        if await self.complete(lease):
            append(self.done, f"{self.worker_id} {lease.request_id}")

    async def heartbeat(self, lease: queue_pb2.Lease, stop: asyncio.Event) -> None:
        request = queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id=lease.request_id, backend=self.worker_id)
        while True:
            await asyncio.sleep(lease.ttl_ms / 3000)
            try:
                reply = await self.stub.Heartbeat(request, timeout=2)
            except grpc.aio.AioRpcError:
                continue
            if reply.cancel:
                stop.set()
                return

    async def complete(self, lease: queue_pb2.Lease) -> bool:
        """True once the queue acknowledged the result; False when it refused the lease."""
        result = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content=f"done by {self.worker_id}"))
        request = queue_pb2.CompleteJobRequest(
            lease_id=lease.lease_id, request_id=lease.request_id, backend=self.worker_id, chat_result=result
        )
        give_up = time.monotonic() + COMPLETE_GIVE_UP_SECONDS
        while time.monotonic() < give_up:
            try:
                await self.stub.CompleteJob(request, timeout=5)
                return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    return False
                await asyncio.sleep(RETRY_SECONDS)
        return False


async def main(args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(args.address) as channel:
        worker = Worker(queue_pb2_grpc.QueueServiceStub(channel), args)
        await asyncio.gather(*(worker.loop() for _ in range(args.concurrency)))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("model")
    parser.add_argument("worker_id")
    parser.add_argument("log_dir")
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--work-ms", type=int, default=300)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
