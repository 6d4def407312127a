"""This router's own jobs: wait for each grant and run it in a task of its own, until it ends or its client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.router.jobs.contracts import JobQueue
from aigw_server.router.jobs.events import Listener
from aigw_server.router.jobs.runner import JobRunner, seconds_left
from aigw_server.runtime.errors import Aborted, Cancelled, FailedPrecondition, GatewayError, NotFound, Unavailable

log = logging.getLogger(__name__)

TERMINAL = frozenset({common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED})
OWN_WAIT_MS = 10_000
MIN_WAIT_MS = 500
REFUSED_PAUSE_SECONDS = 0.2
ERRORS_BY_CODE: dict[str, type[GatewayError]] = {cls.code: cls for cls in GatewayError.__subclasses__()}
# Why a job was stopped when its synchronous client went away (connection closed, call cancelled, deadline).
CLIENT_GONE = "the client went away"


def job_failure(job: common_pb2.Job) -> GatewayError | None:
    """The error a finished job answers its client with; None when it succeeded."""
    if job.state == common_pb2.SUCCEEDED:
        return None
    if job.state == common_pb2.CANCELLED:
        return Cancelled(job.error.message or f"request {job.request_id} was cancelled")
    cls = ERRORS_BY_CODE.get(job.error.code, Unavailable)
    return cls(job.error.message or f"request {job.request_id} failed")


@dataclass
class OwnJobs:
    """Runs the jobs this router submitted for waiting clients; a client that goes away stops its job (`abandon`)."""

    queue: JobQueue
    runner: JobRunner
    clock: Callable[[], float] = time.time
    tasks: set[asyncio.Task[common_pb2.Job]] = field(default_factory=set)
    by_id: dict[str, asyncio.Task[common_pb2.Job]] = field(default_factory=dict)
    cancels: set[asyncio.Task[None]] = field(default_factory=set)
    draining: bool = False

    def start(
        self, job: common_pb2.Job, listener: Listener, lease: queue_pb2.Lease | None = None
    ) -> asyncio.Task[common_pb2.Job]:
        """Runs `job` to its end in a task of its own (under `lease` first when Submit granted one)."""
        task = asyncio.create_task(self._run(job, listener, lease))
        self.tasks.add(task)
        self.by_id[job.request_id] = task
        task.add_done_callback(lambda done: self._forget(job.request_id, done))
        return task

    def _forget(self, request_id: str, task: asyncio.Task[common_pb2.Job]) -> None:
        self.tasks.discard(task)
        if self.by_id.get(request_id) is task:
            del self.by_id[request_id]

    def abandon(self, request_id: str, subject: str) -> None:
        """The synchronous client of `request_id` went away before its answer: cancels the job and stops its attempt.

        A local attempt stops at once (its backend call is cancelled, which closes the engine's stream) and
        reports the job CANCELLED with the reason; otherwise the queue cancels it (a queued job at once, one
        running on another router through that router's heartbeat). A finished job, or one this router no
        longer runs, is left alone; so is every job while the router shuts down (they go to another worker).
        """
        task = self.by_id.get(request_id)
        if task is None or task.done() or self.draining:
            return
        if self.runner.stop_local(request_id, CLIENT_GONE):
            return
        cancel = asyncio.create_task(self._cancel(request_id, subject, task))
        self.cancels.add(cancel)
        cancel.add_done_callback(self.cancels.discard)

    async def _cancel(self, request_id: str, subject: str, task: asyncio.Task[common_pb2.Job]) -> None:
        try:
            job = await self.queue.cancel(request_id, f"{subject or 'its client'} ({CLIENT_GONE})")
        except GatewayError as exc:
            log.warning("could not cancel a job whose client went away", extra={"code": exc.code, "request_id": request_id})
            return
        if self.runner.stop_local(request_id, CLIENT_GONE):  # granted while the cancel was on its way
            return
        if job.state in TERMINAL:
            task.cancel()  # nothing left to wait for: the job ended (or was cancelled while queued)

    async def stop(self) -> None:
        """Stops every task (on shutdown); their leases lapse and the queue hands the jobs to another worker."""
        self.draining = True
        for task in [*self.tasks, *self.cancels]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.cancels, return_exceptions=True)

    async def _run(self, job: common_pb2.Job, listener: Listener, lease: queue_pb2.Lease | None) -> common_pb2.Job:
        try:
            final = await self._until_done(job, listener, lease)
        except BaseException as exc:
            listener.finished(None, exc)
            raise
        listener.finished(final)
        return final

    async def _until_done(self, job: common_pb2.Job, listener: Listener, lease: queue_pb2.Lease | None) -> common_pb2.Job:
        request_id = job.request_id
        while job.state not in TERMINAL:
            if lease is None:
                granted = await self._acquire(job)
                if granted is None:
                    job = await self.queue.get(request_id)
                    if job.state == common_pb2.RUNNING:
                        job = await self._watch(request_id)
                    continue
                job, lease = granted.job, granted.lease
            job = await self.runner.run(job, lease, listener, owner=True)
            lease = None
            if job.state == common_pb2.QUEUED:
                reason = job.attempt_errors[-1].message if job.attempt_errors else "the attempt failed"
                listener.retrying(reason)
        return job

    async def _acquire(self, job: common_pb2.Job) -> queue_pb2.AcquireJobResponse | None:
        wait_ms = int(min(OWN_WAIT_MS, max(MIN_WAIT_MS, seconds_left(job, self.clock()) * 1000)))
        try:
            return await self.queue.acquire(self.runner.worker_id, wait_ms, request_id=job.request_id)
        except (FailedPrecondition, NotFound, Aborted):
            await asyncio.sleep(REFUSED_PAUSE_SECONDS)
            return None

    async def _watch(self, request_id: str) -> common_pb2.Job:
        """Another worker runs the job (it was requeued and taken as an orphan): wait for its end."""
        with contextlib.suppress(GatewayError):
            async for event in self.queue.watch(request_id):
                if event.job.state in TERMINAL:
                    return event.job
        return await self.queue.get(request_id)
