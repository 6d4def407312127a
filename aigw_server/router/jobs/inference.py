"""Inference requests end to end: submit to the queue, then answer at once, wait for the result, or follow it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.router.backends import BackendPool
from aigw_server.router.chat import Submission
from aigw_server.router.gate import Caller
from aigw_server.router.jobs.contracts import JobQueue
from aigw_server.router.jobs.events import Delta, Finished, Listener, Page, Retrying
from aigw_server.router.jobs.own_jobs import OwnJobs, job_failure
from aigw_server.runtime.enums import PRIORITY_BY_WORD
from aigw_server.runtime.errors import GatewayError, Unavailable
from aigw_server.runtime.logs import request_id_var

# A stopped model comes back only when an operator (or the auto-switcher) starts it; a minute is a fair retry.
STOPPED_RETRY_SECONDS = 60.0

T = TypeVar("T")


def refuse_stopped(pool: BackendPool, model: str, caller: Caller) -> None:
    """UNAVAILABLE at once for a request that would wait on a stopped model (async ones may queue for it)."""
    if not pool.stopped(model):
        return
    how = (
        f"start it with POST /admin/models/{model}/start (AdminService.StartModel)"
        if caller.principal.is_admin
        else "an operator has to start it"
    )
    raise Unavailable(f"model {model!r} is stopped: no backend has it loaded; {how}", retry_after=STOPPED_RETRY_SECONDS)


@dataclass(frozen=True)
class Submitted:
    """An admitted job, and its lease when the queue granted it to this router at once (with its payload then).

    `existing`: the idempotency key named a job admitted before (another call may be waiting for it).
    """

    job: common_pb2.Job
    lease: queue_pb2.Lease | None = None
    existing: bool = False


@dataclass
class Hold:
    """A synchronous caller waiting for its job's answer; `call_ended` when its call ends, however it ends.

    A call that ends before its answer came (the client closed the connection, cancelled the call or
    passed its deadline) cancels the job. A call that ended with an answer or an error of its own (for
    instance a stream cut by a failed attempt, whose retry goes on) leaves the job alone, and so does a
    repeated idempotency key: the job is the first call's.
    """

    inference: Inference
    submitted: Submitted
    subject: str
    started: bool = False
    answered: bool = False

    def call_ended(self) -> None:
        if not self.answered and not self.submitted.existing:
            self.inference.abandon(self.submitted, self.subject, self.started)


class Inference:
    """Submits jobs for callers; synchronous and streaming ones are run by this router (OwnJobs)."""

    def __init__(self, queue: JobQueue, own: OwnJobs, worker_id: str) -> None:
        self.queue = queue
        self.own = own
        self.worker_id = worker_id

    async def submit(
        self, caller: Caller, model: str, payload: common_pb2.ChatJob | common_pb2.OcrJob, sub: Submission
    ) -> Submitted:
        """Admits a job durably (RESOURCE_EXHAUSTED when the model's queue is full); async jobs have no owner.

        A job this router waits for is submitted with `accept_lease`: when the queue can grant it at once,
        the lease comes with the answer and the job runs without an AcquireJob round trip.
        """
        request_id = uuid.uuid4().hex
        request_id_var.set(request_id)
        request = queue_pb2.SubmitRequest(
            request_id=request_id,
            model=model,
            priority=PRIORITY_BY_WORD[sub.priority],
            client_id=caller.client_id,
            subject=caller.principal.subject,
            idempotency_key=sub.idempotency_key,
            timeout_seconds=sub.timeout_seconds,
            owner_id="" if sub.async_mode else self.worker_id,
            accept_lease=not sub.async_mode,
        )
        attach(request, payload)
        pending = asyncio.ensure_future(self.queue.submit(request))
        try:
            reply = await asyncio.shield(pending)
        except asyncio.CancelledError:
            if not sub.async_mode:  # the caller left while the job was being admitted: cancel it once it is
                pending.add_done_callback(lambda done: self._left_during_submit(done, payload, caller))
            raise
        request_id_var.set(reply.job.request_id)
        return _submitted(reply, payload)

    def _left_during_submit(
        self, done: asyncio.Future[queue_pb2.SubmitResponse], payload: common_pb2.ChatJob | common_pb2.OcrJob, caller: Caller
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        submitted = _submitted(done.result(), payload)
        if not submitted.existing:
            self.abandon(submitted, caller.principal.subject, started=False)

    def abandon(self, submitted: Submitted, subject: str, started: bool) -> None:
        """Its synchronous caller left: the job is cancelled (started here first if it was not, to use its lease)."""
        if not started:
            self.own.start(submitted.job, Listener(streaming=False), submitted.lease)
        self.own.abandon(submitted.job.request_id, subject)

    def hold(self, submitted: Submitted, caller: Caller) -> Hold:
        """The hold of a synchronous caller on `submitted`; the RPC calls its `call_ended` when it ends."""
        return Hold(self, submitted, caller.principal.subject)

    def start(self, submitted: Submitted, hold: Hold) -> asyncio.Task[common_pb2.Job]:
        """Starts running the job now (its answer is `answer(task, hold)`), so that what the RPC sends meanwhile
        (its request id) does not delay the backend call."""
        hold.started = True
        return self.own.start(submitted.job, Listener(streaming=False), submitted.lease)

    @staticmethod
    async def answer(running: asyncio.Task[common_pb2.Job], hold: Hold) -> common_pb2.Job:
        """The finished job of a started run (its error raised); the job is cancelled if the caller goes away first."""
        final = await asyncio.shield(running)
        hold.answered = True
        failure = job_failure(final)
        if failure is not None:
            raise failure
        return final

    def follow(self, submitted: Submitted, hold: Hold) -> Listener:
        """Runs the job and returns the listener its deltas or pages arrive on, as the backend produces them."""
        hold.started = True
        listener = Listener(streaming=True)
        self.own.start(submitted.job, listener, submitted.lease)
        return listener

    def text(self, submitted: Submitted, hold: Hold) -> AsyncIterator[str | common_pb2.Job]:
        """The answer's text as the backend produces it, then the finished job; the job starts running now.

        When no text came live (another worker ran the job), the whole answer comes as one piece. When an
        attempt fails after text was sent, the stream ends with UNAVAILABLE: the retry starts the answer
        afresh, and its result stays retrievable by request id. A caller that goes away first cancels the job.
        """
        return _answering(hold, self._text(submitted, self.follow(submitted, hold)))

    async def _text(self, submitted: Submitted, listener: Listener) -> AsyncIterator[str | common_pb2.Job]:
        streamed = False
        async for event in listener.events():
            if isinstance(event, Delta):
                streamed = True
                yield event.text
            elif isinstance(event, Retrying) and streamed:
                raise _interrupted(submitted.job.request_id, event.reason)
            elif isinstance(event, Finished):
                final = finished_job(event)
                content = final.chat_result.message.content
                if not streamed and content:
                    yield content
                yield final

    def pages(self, submitted: Submitted, hold: Hold) -> AsyncIterator[Page | common_pb2.Job]:
        """Each page once, as a backend finishes it, then the finished job (pages not sent live come from its
        result); the job starts running now. A caller that goes away first cancels the job.
        """
        return _answering(hold, self._pages(self.follow(submitted, hold)))

    @staticmethod
    async def _pages(listener: Listener) -> AsyncIterator[Page | common_pb2.Job]:
        sent: set[int] = set()
        async for event in listener.events():
            if isinstance(event, Page) and event.page.page not in sent:
                sent.add(event.page.page)
                yield event
            elif isinstance(event, Finished):
                final = finished_job(event)
                result = final.ocr_result
                for page in result.pages:
                    if page.page not in sent:
                        yield Page(page, result.page_count)
                yield final


def _submitted(reply: queue_pb2.SubmitResponse, payload: common_pb2.ChatJob | common_pb2.OcrJob) -> Submitted:
    if not reply.HasField("lease"):
        return Submitted(reply.job, existing=reply.existing)
    attach(reply.job, payload)
    return Submitted(reply.job, reply.lease, reply.existing)


def attach(message: queue_pb2.SubmitRequest | common_pb2.Job, payload: common_pb2.ChatJob | common_pb2.OcrJob) -> None:
    """Sets the chat or OCR payload of a submission or a job."""
    if isinstance(payload, common_pb2.ChatJob):
        message.chat.CopyFrom(payload)
    else:
        message.ocr.CopyFrom(payload)


async def _answering(hold: Hold, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items`, marking the hold answered once they end or fail: only a caller leaving before that stops the job."""
    try:
        async for item in items:
            yield item
    except GatewayError:
        hold.answered = True
        raise
    hold.answered = True


def _interrupted(request_id: str, reason: str) -> Unavailable:
    return Unavailable(
        f"the backend failed mid-answer ({reason}); the request is retried and its result can be fetched by id {request_id}"
    )


def finished_job(event: Finished) -> common_pb2.Job:
    """The job a Finished event carries; its error (or the runner's) raised."""
    if event.error is not None:
        if isinstance(event.error, GatewayError):
            raise event.error
        raise Unavailable("the router stopped before the request finished; fetch its result by id")
    assert event.job is not None
    failure = job_failure(event.job)
    if failure is not None:
        raise failure
    return event.job
