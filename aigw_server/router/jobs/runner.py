"""Runs one leased attempt of a job on a backend: choice, heartbeats, deadline, cancellation, the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field

from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2
from aigw.queue.v1 import queue_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.engines import chat as engine_chat
from aigw_server.engines.chat import StreamPart, request_body
from aigw_server.router.backends import BackendPool
from aigw_server.router.jobs.contracts import Backend, JobQueue
from aigw_server.router.jobs.events import Listener
from aigw_server.router.policies import affinity_key
from aigw_server.runtime.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

log = logging.getLogger(__name__)

NO_BACKEND_WAIT_SECONDS = 5.0
NO_BACKEND_POLL_SECONDS = 0.1
REPORT_RETRY_SECONDS = 15.0
REPORT_FIRST_DELAY = 0.1
REPORT_MAX_DELAY = 1.0
NOT_RETRYABLE = (InvalidArgument, PermissionDenied, Unauthenticated, Unimplemented)
LEASE_GONE = (FailedPrecondition, NotFound, Aborted)


@dataclass
class Attempt:
    """One leased attempt as it runs."""

    job: common_pb2.Job
    lease: queue_pb2.Lease
    listener: Listener | None
    backend: str = ""
    progress: int = 0
    stop_reason: str = ""
    # The task running the backend call while it is in it (the attempt's own), and whether a stop cancelled it.
    calling: asyncio.Task[object] | None = None
    cancelled_call: bool = False

    def stop(self, reason: str) -> None:
        """Stops the backend call (cancelled, deadline passed, lease lost)."""
        if not self.stop_reason:
            self.stop_reason = reason
        if self.calling is not None and not self.cancelled_call:
            self.cancelled_call = True
            self.calling.cancel()


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, before it is reported to the queue."""

    result: common_pb2.ChatResult | common_pb2.OcrResult | None = None
    error: GatewayError | None = None
    retryable: bool = False
    release: str = ""


class Heartbeats:
    """The heartbeats of one attempt: every ttl/3, the first one ttl/3 after the attempt started.

    Most attempts end before their first heartbeat is due, so a timer waits for it instead of a task;
    the task that sends the heartbeats starts when the timer fires.
    """

    def __init__(self, runner: JobRunner, attempt: Attempt) -> None:
        self.runner = runner
        self.attempt = attempt
        self.interval = max(0.05, attempt.lease.ttl_ms / 3000)
        self.task: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(self.interval, self._start)

    def _start(self) -> None:
        self.task = asyncio.create_task(self.runner.heartbeat(self.attempt, self.interval))

    def stop(self) -> None:
        """No further heartbeat (the attempt ended); one on its way is abandoned."""
        self.timer.cancel()
        if self.task is not None:
            self.task.cancel()


def seconds_left(job: common_pb2.Job, now: float) -> float:
    """Seconds to the job's deadline (a large number when it has none)."""
    if not job.timings.HasField("deadline"):
        return 86_400.0
    return job.timings.deadline.ToNanoseconds() / 1e9 - now


def job_error(err: GatewayError, attempt: int, backend: str) -> common_pb2.JobError:
    return common_pb2.JobError(code=err.code, message=err.message, attempt=attempt, backend=backend)


@dataclass
class JobRunner:
    """Runs leased attempts for one router worker id and reports each to the queue."""

    queue: JobQueue
    pool: BackendPool
    backends: Mapping[str, Backend]
    worker_id: str
    no_backend_wait: float = NO_BACKEND_WAIT_SECONDS
    clock: Callable[[], float] = time.time
    running: dict[str, Attempt] = field(default_factory=dict)

    def stop_local(self, request_id: str, reason: str) -> bool:
        """Stops the attempt of `request_id` if this router runs it (faster than waiting for a heartbeat)."""
        attempt = self.running.get(request_id)
        if attempt is None:
            return False
        attempt.stop(reason)
        return True

    async def run(self, job: common_pb2.Job, lease: queue_pb2.Lease, listener: Listener | None, owner: bool) -> common_pb2.Job:
        """Runs one attempt and returns the job as the queue has it afterwards."""
        attempt = Attempt(job, lease, listener)
        self.running[job.request_id] = attempt
        beats = Heartbeats(self, attempt)
        try:
            outcome = await self._attempt(attempt, owner)
        finally:
            beats.stop()
            self.running.pop(job.request_id, None)
        return await self._report(attempt, outcome)

    async def _attempt(self, attempt: Attempt, owner: bool) -> Outcome:
        backend = await self._choose(attempt, owner)
        if attempt.stop_reason:
            return Outcome(error=_stop_error(attempt.stop_reason))
        if backend is None:
            message = f"no healthy backend holds model {attempt.job.model!r} now"
            if owner:
                return Outcome(error=Unavailable(message + "; try again later"))
            return Outcome(release=message)
        attempt.backend = backend.name
        if attempt.listener is not None:
            attempt.listener.started(backend.name)
        self.pool.started(backend.name)
        try:
            return await self._call(attempt, backend)
        finally:
            self.pool.finished(backend.name)

    async def _choose(self, attempt: Attempt, owner: bool) -> Backend | None:
        job = attempt.job
        key = affinity_key([(m.role, m.content) for m in job.chat.messages]) if job.HasField("chat") else ""
        waited = 0.0
        limit = min(self.no_backend_wait, seconds_left(job, self.clock())) if owner else 0.0
        while True:
            view = self.pool.choose(job.model, key)
            if view is not None:
                return self.backends[view.name]
            if waited >= limit or attempt.stop_reason:
                return None
            await asyncio.sleep(NO_BACKEND_POLL_SECONDS)
            waited += NO_BACKEND_POLL_SECONDS

    async def _call(self, attempt: Attempt, backend: Backend) -> Outcome:
        left = seconds_left(attempt.job, self.clock())
        if left <= 0:
            return Outcome(error=DeadlineExceeded("the request's deadline passed"))
        # The backend call runs in the attempt's own task: `Attempt.stop` (and the deadline, through it)
        # cancels this task while it is in the call, and the cancellation is taken back here when it was
        # only that; one from outside (shutdown) still ends the task.
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.get_running_loop().call_later(left, attempt.stop, "deadline")
        attempt.calling, attempt.cancelled_call = task, False
        try:
            return Outcome(result=await self._execute(attempt, backend, left))
        except asyncio.CancelledError:
            if attempt.cancelled_call and task.cancelling() == 1:
                return Outcome(error=_stop_error(attempt.stop_reason))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of the call becomes the attempt's outcome
            return self._failure(attempt, exc)
        finally:
            deadline.cancel()
            attempt.calling = None
            if attempt.cancelled_call:
                task.uncancel()

    def _failure(self, attempt: Attempt, exc: BaseException) -> Outcome:
        if not isinstance(exc, GatewayError):
            log.error("backend call failed unexpectedly", exc_info=exc, extra={"backend": attempt.backend})
            exc = Unavailable(f"backend {attempt.backend!r} failed")
        if isinstance(exc, Cancelled):  # reported as CANCELLED, the queue would cancel the client's job
            exc = Unavailable(f"backend {attempt.backend!r} cancelled the call")
        if isinstance(exc, NOT_RETRYABLE):
            return Outcome(error=exc)
        if isinstance(exc, DeadlineExceeded) and seconds_left(attempt.job, self.clock()) <= 0:
            return Outcome(error=DeadlineExceeded("the request's deadline passed"))
        if isinstance(exc, (FailedPrecondition, NotFound)):
            self.pool.forget_model(attempt.backend, attempt.job.model)
        else:
            self.pool.mark_down(attempt.backend, exc.message)
        log.warning("backend call failed; the job will be retried", extra={"backend": attempt.backend, "code": exc.code})
        return Outcome(error=exc, retryable=True)

    async def _execute(self, attempt: Attempt, backend: Backend, timeout: float) -> common_pb2.ChatResult | common_pb2.OcrResult:
        job = attempt.job
        streaming = attempt.listener is None or attempt.listener.streaming
        if job.HasField("chat"):
            return await (self._stream_chat(attempt, backend, timeout) if streaming else self._chat(attempt, backend, timeout))
        return await (self._stream_ocr(attempt, backend, timeout) if streaming else self._ocr(attempt, backend, timeout))

    async def _chat(self, attempt: Attempt, backend: Backend, timeout: float) -> common_pb2.ChatResult:
        job = attempt.job
        async with backend.engine_route(job.model) as route:
            if route is not None:
                body = request_body(route.target, job.chat, job.priority, stream=False)
                return await engine_chat.complete(route.client, route.target, body, job.request_id)
        request = textgen_pb2.GenerateRequest(model=job.model, chat=job.chat, request_id=job.request_id, priority=job.priority)
        return await backend.generate(request, timeout)

    async def _stream_chat(self, attempt: Attempt, backend: Backend, timeout: float) -> common_pb2.ChatResult:
        job = attempt.job
        parts: list[str] = []
        result = common_pb2.ChatResult(model=job.model)
        async with backend.engine_route(job.model) as route:
            if route is not None:
                body = request_body(route.target, job.chat, job.priority, stream=True)
                stream = engine_chat.stream(route.client, route.target, body, job.request_id)
            else:
                stream = _relayed(backend, job, timeout)
            async with contextlib.aclosing(stream) as chunks:
                async for delta, finish_reason, usage in chunks:
                    if delta:
                        parts.append(delta)
                        attempt.progress += 1
                        if attempt.listener is not None:
                            attempt.listener.delta(delta)
                    if finish_reason:
                        result.finish_reason = finish_reason
                    if usage is not None:
                        result.usage.CopyFrom(usage)
        result.message.CopyFrom(common_pb2.ChatMessage(role="assistant", content="".join(parts)))
        return result

    async def _ocr(self, attempt: Attempt, backend: Backend, timeout: float) -> common_pb2.OcrResult:
        job = attempt.job
        return await backend.recognize(ocr_pb2.RecognizeRequest(model=job.model, job=job.ocr, request_id=job.request_id), timeout)

    async def _stream_ocr(self, attempt: Attempt, backend: Backend, timeout: float) -> common_pb2.OcrResult:
        job = attempt.job
        request = ocr_pb2.StreamRecognizeRequest(model=job.model, job=job.ocr, request_id=job.request_id)
        result = common_pb2.OcrResult(model=job.model)
        async with contextlib.aclosing(backend.stream_recognize(request, timeout)) as pages:
            async for reply in pages:
                result.pages.append(reply.page)
                result.page_count = reply.page_count
                result.document_type = reply.document_type
                result.engine = reply.engine
                attempt.progress += 1
                if attempt.listener is not None:
                    attempt.listener.page(reply.page, reply.page_count)
        result.pages.sort(key=lambda p: p.page)
        result.text = "\f".join(p.text for p in result.pages)
        return result

    async def heartbeat(self, attempt: Attempt, interval: float) -> None:
        """Renews the lease now and then every `interval` seconds with the progress; stops the attempt when the queue says so."""
        while True:
            request = queue_pb2.HeartbeatRequest(
                lease_id=attempt.lease.lease_id,
                request_id=attempt.job.request_id,
                progress=attempt.progress,
                backend=attempt.backend,
            )
            try:
                reply = await self.queue.heartbeat(request)
            except LEASE_GONE:
                attempt.stop("lease lost")
                return
            except GatewayError as exc:
                log.warning("heartbeat failed; retrying", extra={"code": exc.code})
            else:
                if reply.cancel:
                    attempt.stop(reply.cancel_reason or "cancelled")
                    return
            await asyncio.sleep(interval)  # after a failed heartbeat too: the next one is the retry

    async def _report(self, attempt: Attempt, outcome: Outcome) -> common_pb2.Job:
        """Reports the attempt, retrying while the queue is unavailable (a restarting queue keeps the lease)."""
        delay, give_up = REPORT_FIRST_DELAY, time.monotonic() + REPORT_RETRY_SECONDS
        while True:
            try:
                return await self._report_once(attempt, outcome)
            except Unavailable:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("the queue is unavailable; retrying the report", extra={"retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(REPORT_MAX_DELAY, delay * 2)

    async def _report_once(self, attempt: Attempt, outcome: Outcome) -> common_pb2.Job:
        job, lease = attempt.job, attempt.lease
        try:
            if outcome.result is not None:
                return await self.queue.complete(_completion(attempt, outcome.result))
            if outcome.release:
                request = queue_pb2.ReleaseJobRequest(lease_id=lease.lease_id, request_id=job.request_id, reason=outcome.release)
                return await self.queue.release(request)
            assert outcome.error is not None
            error = job_error(outcome.error, lease.attempt, attempt.backend)
            failure = queue_pb2.FailJobRequest(
                lease_id=lease.lease_id, request_id=job.request_id, error=error, retryable=outcome.retryable
            )
            return await self.queue.fail(failure)
        except LEASE_GONE:
            return await self.queue.get(job.request_id)


async def _relayed(backend: Backend, job: common_pb2.Job, timeout: float) -> AsyncGenerator[StreamPart, None]:
    """A stream through the backend's StreamGenerate RPC, in the parts a direct engine stream yields."""
    request = textgen_pb2.StreamGenerateRequest(model=job.model, chat=job.chat, request_id=job.request_id, priority=job.priority)
    async with contextlib.aclosing(backend.stream_generate(request, timeout)) as chunks:
        async for chunk in chunks:
            yield chunk.delta, chunk.finish_reason, chunk.usage if chunk.HasField("usage") else None


def _completion(attempt: Attempt, result: common_pb2.ChatResult | common_pb2.OcrResult) -> queue_pb2.CompleteJobRequest:
    request = queue_pb2.CompleteJobRequest(
        lease_id=attempt.lease.lease_id, request_id=attempt.job.request_id, backend=attempt.backend
    )
    if isinstance(result, common_pb2.ChatResult):
        request.chat_result.CopyFrom(result)
    else:
        request.ocr_result.CopyFrom(result)
    return request


def _stop_error(reason: str) -> GatewayError:
    if "deadline" in reason:
        return DeadlineExceeded("the request's deadline passed")
    if reason == "lease lost":
        return Aborted("the lease was lost")
    return Cancelled("the request was cancelled" if reason == "cancelled" else f"the request was cancelled: {reason}")
