"""QueueService and CrashLogService: proto in, one domain call, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue import convert
from aigw_server.queue.crashlog import CrashLog
from aigw_server.queue.job_history import JobFilter
from aigw_server.queue.jobs import JobRecord, Lease
from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.session import SessionServicer
from aigw_server.queue.times import to_timestamp
from aigw_server.runtime.errors import InvalidArgument, Unavailable
from aigw_server.runtime.queue_session import ACCEPTED

# grpc's stubs type a context by its request and response messages, which differ per RPC of one servicer.
Ctx = grpc.aio.ServicerContext[Any, Any]


class Readiness:
    """Whether the view has been rebuilt from the store; until then every call answers UNAVAILABLE."""

    def __init__(self) -> None:
        self.ready = False

    def check(self) -> None:
        if not self.ready:
            raise Unavailable("the queue is starting (recovering its state); try again", retry_after=0.5)


def _required(value: str, name: str) -> str:
    if not value:
        raise InvalidArgument(f"{name}: required", field=name)
    return value


class JobCalls:
    """The job operations a router calls, proto in and proto out: the unary RPCs and the Session stream both run these."""

    def __init__(self, engine: JobEngine, readiness: Readiness) -> None:
        self.engine = engine
        self.readiness = readiness

    def job(self, rec: JobRecord, include_payload: bool = False) -> common_pb2.Job:
        return convert.job_proto(rec, self.engine.position(rec), self.engine.clock(), include_payload)

    def _granted(self, granted: tuple[JobRecord, Lease] | None) -> queue_pb2.AcquireJobResponse:
        if granted is None:
            return queue_pb2.AcquireJobResponse()
        rec, lease = granted
        return queue_pb2.AcquireJobResponse(job=self.job(rec, True), lease=convert.lease_proto(rec, lease, self.engine.ttl))

    async def submit(self, request: queue_pb2.SubmitRequest) -> queue_pb2.SubmitResponse:
        self.readiness.check()
        admission = await self.engine.submit(convert.submit_spec(request))
        reply = queue_pb2.SubmitResponse(job=self.job(admission.job), existing=admission.existing)
        if admission.lease is not None:
            reply.lease.CopyFrom(convert.lease_proto(admission.job, admission.lease, self.engine.ttl))
        return reply

    async def get_job(self, request: queue_pb2.GetJobRequest) -> queue_pb2.GetJobResponse:
        self.readiness.check()
        rec = await self.engine.find(_required(request.request_id, "request_id"), request.include_payload)
        return queue_pb2.GetJobResponse(job=self.job(rec, request.include_payload))

    async def cancel_job(self, request: queue_pb2.CancelJobRequest) -> queue_pb2.CancelJobResponse:
        self.readiness.check()
        rec = await self.engine.cancel(_required(request.request_id, "request_id"), request.requested_by)
        return queue_pb2.CancelJobResponse(job=self.job(rec))

    async def acquire_job(self, request: queue_pb2.AcquireJobRequest) -> queue_pb2.AcquireJobResponse:
        self.readiness.check()
        if request.wait_ms < 0:
            raise InvalidArgument("wait_ms: must be >= 0", field="wait_ms")
        wait_s = request.wait_ms / 1000.0
        granted = await self.engine.acquire(request.request_id, request.worker_id, list(request.models), wait_s)
        return self._granted(granted)

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        self.readiness.check()
        reply = self.engine.heartbeat(
            _required(request.lease_id, "lease_id"),
            _required(request.request_id, "request_id"),
            request.progress,
            request.backend,
        )
        return queue_pb2.HeartbeatResponse(
            expires_at=to_timestamp(reply.expires_at), cancel=reply.cancel, cancel_reason=reply.reason
        )

    async def complete_job(self, request: queue_pb2.CompleteJobRequest) -> queue_pb2.CompleteJobResponse:
        self.readiness.check()
        rid = _required(request.request_id, "request_id")
        lease_id = _required(request.lease_id, "lease_id")
        rec = await self.engine.complete(lease_id, rid, request.backend, convert.job_result(request))
        return queue_pb2.CompleteJobResponse(job=self.job(rec))

    async def fail_job(self, request: queue_pb2.FailJobRequest) -> queue_pb2.FailJobResponse:
        self.readiness.check()
        rid = _required(request.request_id, "request_id")
        error = convert.error_from_proto(request.error)
        rec = await self.engine.fail(_required(request.lease_id, "lease_id"), rid, error, request.retryable)
        return queue_pb2.FailJobResponse(job=self.job(rec))

    async def release_job(self, request: queue_pb2.ReleaseJobRequest) -> queue_pb2.ReleaseJobResponse:
        self.readiness.check()
        rid = _required(request.request_id, "request_id")
        rec = await self.engine.release(_required(request.lease_id, "lease_id"), rid, request.reason)
        return queue_pb2.ReleaseJobResponse(job=self.job(rec))


class QueueServicer(queue_pb2_grpc.QueueServiceServicer):
    """Admission, grants, leases, results and history of jobs."""

    def __init__(self, engine: JobEngine, readiness: Readiness) -> None:
        self.engine = engine
        self.readiness = readiness
        self.calls = JobCalls(engine, readiness)
        self.session = SessionServicer(self.calls)

    async def Submit(self, request: queue_pb2.SubmitRequest, context: Ctx) -> queue_pb2.SubmitResponse:
        return await self.calls.submit(request)

    async def GetJob(self, request: queue_pb2.GetJobRequest, context: Ctx) -> queue_pb2.GetJobResponse:
        return await self.calls.get_job(request)

    async def WatchJob(self, request: queue_pb2.WatchJobRequest, context: Ctx) -> AsyncIterator[queue_pb2.WatchJobResponse]:
        self.readiness.check()
        async for event, rec in self.engine.watch(_required(request.request_id, "request_id")):
            yield queue_pb2.WatchJobResponse(event=queue_pb2.WatchEvent.ValueType(event), job=self.calls.job(rec))

    async def CancelJob(self, request: queue_pb2.CancelJobRequest, context: Ctx) -> queue_pb2.CancelJobResponse:
        return await self.calls.cancel_job(request)

    async def AcquireJob(self, request: queue_pb2.AcquireJobRequest, context: Ctx) -> queue_pb2.AcquireJobResponse:
        return await self.calls.acquire_job(request)

    async def Heartbeat(self, request: queue_pb2.HeartbeatRequest, context: Ctx) -> queue_pb2.HeartbeatResponse:
        return await self.calls.heartbeat(request)

    async def CompleteJob(self, request: queue_pb2.CompleteJobRequest, context: Ctx) -> queue_pb2.CompleteJobResponse:
        return await self.calls.complete_job(request)

    async def FailJob(self, request: queue_pb2.FailJobRequest, context: Ctx) -> queue_pb2.FailJobResponse:
        return await self.calls.fail_job(request)

    async def ReleaseJob(self, request: queue_pb2.ReleaseJobRequest, context: Ctx) -> queue_pb2.ReleaseJobResponse:
        return await self.calls.release_job(request)

    async def Session(
        self, request_iterator: AsyncIterator[queue_pb2.SessionRequest], context: Ctx
    ) -> AsyncIterator[queue_pb2.SessionResponse]:
        async for reply in self.session.run(request_iterator):
            yield reply

    async def SessionBatches(
        self, request_iterator: AsyncIterator[queue_pb2.SessionBatchesRequest], context: Ctx
    ) -> AsyncIterator[queue_pb2.SessionBatchesResponse]:
        await context.send_initial_metadata((ACCEPTED,))  # the router writes its first calls after these headers
        async for batch in self.session.run_batches(request_iterator):
            yield batch

    async def ListJobs(self, request: queue_pb2.ListJobsRequest, context: Ctx) -> queue_pb2.ListJobsResponse:
        self.readiness.check()
        f = JobFilter(
            model=request.model,
            state=int(request.state),
            client_id=request.client_id,
            kind=int(request.kind),
            since=convert.optional_seconds(request, "since"),
            until=convert.optional_seconds(request, "until"),
            subject=request.subject,
        )
        page, token = await self.engine.list_jobs(f, request.page_size, request.page_token)
        return queue_pb2.ListJobsResponse(jobs=[self.calls.job(r) for r in page], next_page_token=token)

    async def GetQueueStats(self, request: queue_pb2.GetQueueStatsRequest, context: Ctx) -> queue_pb2.GetQueueStatsResponse:
        self.readiness.check()
        model = _required(request.model, "model")
        return convert.stats_proto(model, self.engine.queue_stats(model))

    async def GetQueueSeries(self, request: queue_pb2.GetQueueSeriesRequest, context: Ctx) -> queue_pb2.GetQueueSeriesResponse:
        self.readiness.check()
        model = _required(request.model, "model")
        minutes = request.minutes if request.HasField("minutes") else None
        return convert.series_proto(model, self.engine.series(model, minutes))

    async def GetUsage(self, request: queue_pb2.GetUsageRequest, context: Ctx) -> queue_pb2.GetUsageResponse:
        self.readiness.check()
        since, buckets = self.engine.usage(request.window_days)
        reply = queue_pb2.GetUsageResponse(since=to_timestamp(since))
        for (model, hour), count in sorted(buckets.items()):
            reply.buckets.add(model=model, hour_of_week=hour, count=count)
        return reply


class CrashLogServicer(queue_pb2_grpc.CrashLogServiceServicer):
    """Records and lists abnormal events."""

    def __init__(self, crashlog: CrashLog, readiness: Readiness) -> None:
        self.crashlog = crashlog
        self.readiness = readiness

    async def RecordCrash(self, request: queue_pb2.RecordCrashRequest, context: Ctx) -> queue_pb2.RecordCrashResponse:
        self.readiness.check()
        stored = await self.crashlog.record(convert.crash_from_proto(request.event))
        return queue_pb2.RecordCrashResponse(event=convert.crash_proto(stored))

    async def ListCrashes(self, request: queue_pb2.ListCrashesRequest, context: Ctx) -> queue_pb2.ListCrashesResponse:
        self.readiness.check()
        events, token = await self.crashlog.list(convert.crash_filter(request), request.page_size, request.page_token)
        return queue_pb2.ListCrashesResponse(events=[convert.crash_proto(e) for e in events], next_page_token=token)
