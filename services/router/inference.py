"""Inference requests end to end: submit to the queue, then answer at once, wait for the result, or follow it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_common.errors import GatewayError, Unavailable
from aigw_common.logs import request_id_var
from services.router.chat import Submission
from services.router.clients import QueueClient
from services.router.convert import PRIORITIES
from services.router.events import Delta, Finished, Listener, Page, Retrying
from services.router.gate import Caller
from services.router.own_jobs import OwnJobs, job_failure


class Inference:
    """Submits jobs for callers; synchronous and streaming ones are run by this router (OwnJobs)."""

    def __init__(self, queue: QueueClient, own: OwnJobs, worker_id: str) -> None:
        self.queue = queue
        self.own = own
        self.worker_id = worker_id

    async def submit(
        self, caller: Caller, model: str, payload: common_pb2.ChatJob | common_pb2.OcrJob, sub: Submission
    ) -> common_pb2.Job:
        """Admits a job durably (RESOURCE_EXHAUSTED when the model's queue is full); async jobs have no owner."""
        request_id = uuid.uuid4().hex
        request_id_var.set(request_id)
        request = queue_pb2.SubmitRequest(
            request_id=request_id,
            model=model,
            priority=PRIORITIES[sub.priority],
            client_id=caller.client_id,
            subject=caller.principal.subject,
            idempotency_key=sub.idempotency_key,
            timeout_seconds=sub.timeout_seconds,
            owner_id="" if sub.async_mode else self.worker_id,
        )
        if isinstance(payload, common_pb2.ChatJob):
            request.chat.CopyFrom(payload)
        else:
            request.ocr.CopyFrom(payload)
        job = (await self.queue.submit(request)).job
        request_id_var.set(job.request_id)
        return job

    async def wait(self, job: common_pb2.Job) -> common_pb2.Job:
        """The finished job (its error raised); the job keeps running if the caller goes away."""
        final = await asyncio.shield(self.own.start(job, Listener(streaming=False)))
        failure = job_failure(final)
        if failure is not None:
            raise failure
        return final

    def follow(self, job: common_pb2.Job) -> Listener:
        """Runs the job and returns the listener its deltas or pages arrive on, as the backend produces them."""
        listener = Listener(streaming=True)
        self.own.start(job, listener)
        return listener

    async def text(self, job: common_pb2.Job) -> AsyncIterator[str | common_pb2.Job]:
        """The answer's text as the backend produces it, then the finished job.

        When no text came live (another worker ran the job), the whole answer comes as one piece. When an
        attempt fails after text was sent, the stream ends with UNAVAILABLE: the retry starts the answer
        afresh, and its result stays retrievable by request id.
        """
        streamed = False
        async for event in self.follow(job).events():
            if isinstance(event, Delta):
                streamed = True
                yield event.text
            elif isinstance(event, Retrying) and streamed:
                raise _interrupted(job.request_id, event.reason)
            elif isinstance(event, Finished):
                final = finished_job(event)
                content = final.chat_result.message.content
                if not streamed and content:
                    yield content
                yield final

    async def pages(self, job: common_pb2.Job) -> AsyncIterator[Page | common_pb2.Job]:
        """Each page once, as a backend finishes it, then the finished job (pages not sent live come from its result)."""
        sent: set[int] = set()
        async for event in self.follow(job).events():
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
