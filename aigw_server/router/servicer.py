"""RouterService: proto ⇄ domain for the public inference API; the work happens in the modules it calls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from google.api import httpbody_pb2

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.router import convert
from aigw_server.router.background import ReadinessWatch
from aigw_server.router.catalog import ModelCatalog
from aigw_server.router.chat import Submission, parse_priority, refuse_stream_flag, submission, validate_chat
from aigw_server.router.gate import Caller, CallMeta, Gate
from aigw_server.router.jobs.contracts import JobQueue
from aigw_server.router.jobs.events import Page
from aigw_server.router.jobs.inference import Hold, Inference, Submitted, refuse_stopped
from aigw_server.router.jobs.runner import JobRunner
from aigw_server.router.ocr_checks import OcrPreflight
from aigw_server.router.ocr_input import OcrSpec, parse_upload, validate_ocr
from aigw_server.router.openai_compat import (
    DONE,
    JSON_TYPE,
    SSE_TYPE,
    ChunkWriter,
    CompletionRequest,
    async_accepted_body,
    completion_body,
    parse_completion_request,
)
from aigw_server.runtime.errors import InvalidArgument, Unavailable
from aigw_server.runtime.listing import check_listing
from aigw_server.runtime.rpc_errors import REQUEST_ID_KEY

# One context type for RPCs whose request and response messages differ (grpc-stubs makes it generic in both).
Ctx = grpc.aio.ServicerContext[Any, Any]
NOT_READY_RETRY_SECONDS = 1.0
HEADERS = {
    "authorization": "authorization",
    "x-api-key": "api_key",
    "x-client-id": "client_id",
    "x-priority": "priority",
    "x-resolution": "resolution",
    "prefer": "prefer",
    "idempotency-key": "idempotency_key",
}


def call_meta(context: Ctx) -> CallMeta:
    """The metadata the router honours (the first value of each)."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        name = HEADERS.get(key)
        if name is not None and name not in found:
            found[name] = value if isinstance(value, str) else value.decode(errors="replace")
    return CallMeta(**found)


async def send_request_id(context: Ctx, request_id: str) -> None:
    """A stream's answer carries its request id in the `x-request-id` header (initial metadata), so that
    the caller has it before the first message."""
    await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))


def keep_request_id(context: Ctx, request_id: str) -> None:
    """A unary answer carries its request id in the `x-request-id` trailer (trailing metadata).

    Trailing metadata travel with the answer and its status in one write; initial metadata sent apart
    would be a write (and a wakeup of the caller) of their own. A call that fails afterwards sends the
    same id with its status (`runtime.interceptors`).
    """
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Each RPC: metadata and body to domain values, one domain call, the result back to protos."""

    def __init__(
        self,
        gate: Gate,
        catalog: ModelCatalog,
        inference: Inference,
        queue: JobQueue,
        runner: JobRunner,
        health: tuple[ReadinessWatch, str],
        preflight: OcrPreflight,
    ) -> None:
        self.gate = gate
        self.catalog = catalog
        self.inference = inference
        self.queue = queue
        self.runner = runner
        self.readiness, self.version = health
        self.pool = self.readiness.poller.pool
        self.preflight = preflight

    async def GetHealth(self, request: router_pb2.GetHealthRequest, context: Ctx) -> router_pb2.GetHealthResponse:
        readiness = self.readiness.current()
        if not readiness.ready:
            raise Unavailable(readiness.explanation(), retry_after=NOT_READY_RETRY_SECONDS)
        return router_pb2.GetHealthResponse(status=readiness.status, components=readiness.components, version=self.version)

    async def Chat(self, request: router_pb2.ChatRequest, context: Ctx) -> router_pb2.ChatResponse:
        meta = call_meta(context)
        caller = await self.gate.admit(meta)
        refuse_stream_flag(request.stream)
        spec = validate_chat(convert.chat_input(request), self.catalog)
        async_mode = request.async_mode or meta.prefers_async
        sub = self._submission(meta, request.priority, async_mode, request.idempotency_key, request.timeout_seconds)
        await self._refuse_stopped(spec.model.name, caller, sub)
        submitted = await self.inference.submit(caller, spec.model.name, convert.chat_job(spec), sub)
        hold = None if sub.async_mode else self._hold(context, submitted, caller)
        job = await self._answer(context, submitted, hold)
        return convert.chat_response(job)

    async def StreamChat(
        self, request: router_pb2.StreamChatRequest, context: Ctx
    ) -> AsyncIterator[router_pb2.StreamChatResponse]:
        meta = call_meta(context)
        caller = await self.gate.admit(meta)
        spec = validate_chat(convert.chat_input(request), self.catalog)
        sub = self._submission(meta, request.priority, False, request.idempotency_key, request.timeout_seconds)
        await self._refuse_stopped(spec.model.name, caller, sub)
        submitted = await self.inference.submit(caller, spec.model.name, convert.chat_job(spec), sub)
        hold = self._hold(context, submitted, caller)
        job, model = submitted.job, spec.model.name
        rid = job.request_id
        answer = self.inference.text(submitted, hold)  # the backend call starts while the first message goes out
        await send_request_id(context, rid)
        yield router_pb2.StreamChatResponse(request_id=rid, model=model, status=job.state, position=job.position)
        async for item in answer:
            if isinstance(item, str):
                yield router_pb2.StreamChatResponse(request_id=rid, model=model, status=common_pb2.RUNNING, delta=item)
            else:
                result = item.chat_result
                yield router_pb2.StreamChatResponse(
                    request_id=rid, model=model, status=item.state, finish_reason=result.finish_reason, usage=result.usage
                )

    async def CreateChatCompletion(self, request: httpbody_pb2.HttpBody, context: Ctx) -> AsyncIterator[httpbody_pb2.HttpBody]:
        meta = call_meta(context)
        caller = await self.gate.admit(meta)
        completion = parse_completion_request(request.data)
        spec = validate_chat(completion.chat, self.catalog)
        sub = self._submission(meta, "", meta.prefers_async and not completion.stream, "", 0.0)
        await self._refuse_stopped(spec.model.name, caller, sub)
        submitted = await self.inference.submit(caller, spec.model.name, convert.chat_job(spec), sub)
        hold = None if sub.async_mode else self._hold(context, submitted, caller)
        job = submitted.job
        created = int(time.time())
        if hold is None:
            keep_request_id(context, job.request_id)  # one JSON body: the id goes with it, as for a unary answer
            yield httpbody_pb2.HttpBody(
                content_type=JSON_TYPE, data=async_accepted_body(job.request_id, common_pb2.JobState.Name(job.state))
            )
        elif completion.stream:
            answer = self.inference.text(submitted, hold)  # the backend call starts while the headers go out
            await send_request_id(context, job.request_id)
            async for chunk in self._sse(submitted, answer, completion, created, spec.model.name):
                yield httpbody_pb2.HttpBody(content_type=SSE_TYPE, data=chunk)
        else:
            keep_request_id(context, job.request_id)  # one JSON body: the id goes with it, as for a unary answer
            final = await self.inference.answer(self.inference.start(submitted, hold), hold)
            result = final.chat_result
            body = completion_body(
                final.request_id, created, spec.model.name, result.message.content, result.finish_reason, convert.usage_of(final)
            )
            yield httpbody_pb2.HttpBody(content_type=JSON_TYPE, data=body)

    @staticmethod
    async def _sse(
        submitted: Submitted,
        answer: AsyncIterator[str | common_pb2.Job],
        completion: CompletionRequest,
        created: int,
        model: str,
    ) -> AsyncIterator[bytes]:
        writer = ChunkWriter(submitted.job.request_id, created, model)
        yield writer.role()
        async for item in answer:
            if isinstance(item, str):
                yield writer.delta(item)
                continue
            yield writer.finish(item.chat_result.finish_reason)
            if completion.include_usage:
                yield writer.usage(convert.usage_of(item))
        yield DONE

    async def ListModels(self, request: router_pb2.ListModelsRequest, context: Ctx) -> router_pb2.ListModelsResponse:
        await self.gate.identify(call_meta(context))
        cards = [
            router_pb2.ModelCard(id=m.name, object="model", created=m.created, owned_by="aigw") for m in self.catalog.enabled()
        ]
        return router_pb2.ListModelsResponse(object="list", data=cards)

    async def Ocr(self, request: router_pb2.OcrRequest, context: Ctx) -> router_pb2.OcrResponse:
        meta = call_meta(context)
        caller = await self.gate.admit(meta)
        spec, sub = self._ocr(request, meta, streaming=False)
        await self.preflight.check(spec)
        await self._refuse_stopped(spec.model.name, caller, sub)
        submitted = await self.inference.submit(caller, spec.model.name, convert.ocr_job(spec), sub)
        hold = None if sub.async_mode else self._hold(context, submitted, caller)
        job = await self._answer(context, submitted, hold)
        return convert.ocr_response(job)

    async def StreamOcr(self, request: router_pb2.StreamOcrRequest, context: Ctx) -> AsyncIterator[router_pb2.StreamOcrResponse]:
        meta = call_meta(context)
        caller = await self.gate.admit(meta)
        spec, sub = self._ocr(request, meta, streaming=True)
        await self.preflight.check(spec)
        await self._refuse_stopped(spec.model.name, caller, sub)
        submitted = await self.inference.submit(caller, spec.model.name, convert.ocr_job(spec), sub)
        hold = self._hold(context, submitted, caller)
        job = submitted.job
        answer = self.inference.pages(submitted, hold)  # the backend call starts while the first message goes out
        await send_request_id(context, job.request_id)
        yield router_pb2.StreamOcrResponse(request_id=job.request_id, status=job.state, position=job.position)
        async for item in answer:
            if isinstance(item, Page):
                yield router_pb2.StreamOcrResponse(
                    request_id=job.request_id, status=common_pb2.RUNNING, page=item.page, page_count=item.page_count
                )
            else:
                yield router_pb2.StreamOcrResponse(
                    request_id=job.request_id, status=item.state, page_count=item.ocr_result.page_count
                )

    async def ListRequests(self, request: router_pb2.ListRequestsRequest, context: Ctx) -> router_pb2.ListRequestsResponse:
        caller = await self.gate.identify(call_meta(context))
        since = request.since if request.HasField("since") else None
        until = request.until if request.HasField("until") else None
        check_listing(request.page_size, since, until)
        query = queue_pb2.ListJobsRequest(
            model=request.model,
            state=request.state,
            client_id=request.client_id,
            kind=request.kind,
            since=since,
            until=until,
            page_size=request.page_size,
            page_token=request.page_token,
            subject=Gate.own_subject(caller),
        )
        reply = await self.queue.list_jobs(query)
        return router_pb2.ListRequestsResponse(requests=reply.jobs, next_page_token=reply.next_page_token)

    async def GetRequest(self, request: router_pb2.GetRequestRequest, context: Ctx) -> router_pb2.GetRequestResponse:
        caller = await self.gate.identify(call_meta(context))
        job = await self._visible_job(caller, request.request_id, request.include_payload)
        return router_pb2.GetRequestResponse(request=job)

    async def CancelRequest(self, request: router_pb2.CancelRequestRequest, context: Ctx) -> router_pb2.CancelRequestResponse:
        caller = await self.gate.identify(call_meta(context))
        await self._visible_job(caller, request.request_id)
        job = await self.queue.cancel(request.request_id, caller.principal.subject)
        self.runner.stop_local(request.request_id, "cancelled")
        return router_pb2.CancelRequestResponse(request=job)

    async def WatchRequest(
        self, request: router_pb2.WatchRequestRequest, context: Ctx
    ) -> AsyncIterator[router_pb2.WatchRequestResponse]:
        caller = await self.gate.identify(call_meta(context))
        await self._visible_job(caller, request.request_id)
        async for event in self.queue.watch(request.request_id):
            yield router_pb2.WatchRequestResponse(event=convert.WATCH_EVENTS.get(event.event, "unspecified"), request=event.job)

    async def _visible_job(self, caller: Caller, request_id: str, include_payload: bool = False) -> common_pb2.Job:
        if not request_id:
            raise InvalidArgument("request_id: required", field="request_id")
        job = await self.queue.get(request_id, include_payload)
        self.gate.check_visible(caller, request_id, job.subject)
        return job

    async def _answer(self, context: Ctx, submitted: Submitted, hold: Hold | None) -> common_pb2.Job:
        """The job to answer with: as admitted for an async request (no hold), else finished; its request id
        goes out as the `x-request-id` trailer, with the answer or with the error that ends the call."""
        keep_request_id(context, submitted.job.request_id)
        if hold is None:
            return submitted.job
        return await self.inference.answer(self.inference.start(submitted, hold), hold)

    def _hold(self, context: Ctx, submitted: Submitted, caller: Caller) -> Hold:
        """The caller waits for the answer: when the call ends before it (disconnect, cancel, deadline), the job stops."""
        hold = self.inference.hold(submitted, caller)
        # grpc-stubs wants the callback typed for the context's messages, which a lambda cannot say.
        ended = cast("grpc.aio.DoneCallback[Any, Any]", lambda _context: hold.call_ended())
        context.add_done_callback(ended)
        return hold

    async def _refuse_stopped(self, model: str, caller: Caller, sub: Submission) -> None:
        if sub.async_mode or not self.pool.stopped(model):
            return
        # The pool's view is up to one status interval old: an operator may have just started the
        # model, so look again before refusing (only requests for a stopped model pay for it).
        await self.readiness.poller.poll_once()
        refuse_stopped(self.pool, model, caller)

    def _submission(self, meta: CallMeta, priority: str, async_mode: bool, key: str, timeout: float) -> Submission:
        return submission(parse_priority(meta.priority, priority), async_mode, key or meta.idempotency_key, timeout)

    def _ocr(self, request: convert.OcrLike, meta: CallMeta, streaming: bool) -> tuple[OcrSpec, Submission]:
        raw = convert.ocr_input(request)
        if request.upload.data:
            raw = parse_upload(request.upload.content_type, request.upload.data, raw)
        spec = validate_ocr(raw, self.catalog, meta.resolution, self.preflight.rules.max_bytes)
        async_mode = not streaming and (raw.async_mode or meta.prefers_async)
        return spec, self._submission(meta, raw.priority, async_mode, raw.idempotency_key, raw.timeout_seconds)
