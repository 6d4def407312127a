"""The queue's servicers in process: proto ⇄ domain mapping, status codes and error details of every service,
through the real interceptor chain, on an in-memory store (see inprocess.py for why not grpc_testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue.crashlog import CrashLog
from aigw_server.queue.identity import Identities
from aigw_server.queue.jobs import Kind, Priority, State
from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.records_servicer import IdentityServicer, ModelConfigServicer
from aigw_server.queue.servicer import CrashLogServicer, QueueServicer, Readiness
from aigw_server.queue.stats import epoch_hour, hour_of_week
from aigw_server.runtime.config import parse_config
from tests.unit.queue.inprocess import Clock, Failure, MemoryStore, Rpcs

pytestmark = pytest.mark.timeout(30)

CHAT = "chat-a"
OCR = "ocr-a"
QUEUE = "/aigw.queue.v1.QueueService/"


@dataclass
class Mesh:
    """The queue's servicers on an in-memory store, and a way to call them."""

    rpcs: Rpcs
    store: MemoryStore
    clock: Clock
    readiness: Readiness

    async def call(self, method: str, request: Any) -> Any:
        return await self.rpcs.unary(method, request)

    async def submit(self, text: str = "hi", **fields: Any) -> Any:
        fields.setdefault("model", CHAT)
        chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content=text)])
        return await self.call(QUEUE + "Submit", queue_pb2.SubmitRequest(chat=chat, **fields))


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    cfg = parse_config(
        {
            "mesh_tls": {"mode": "plaintext"},
            "queue": {"lease_ttl_seconds": 5, "max_waiting": 2},
            "models": {CHAT: {"kind": "chat", "max_concurrent": 2}, OCR: {"kind": "ocr", "max_concurrent": 1}},
        },
        env={},
    )
    store, clock, readiness = MemoryStore(), Clock(), Readiness()
    crashlog = CrashLog(store, clock)
    engine = JobEngine(cfg, store, crashlog, clock)
    identities = Identities(store, clock)
    rpcs = Rpcs()
    queue_pb2_grpc.add_QueueServiceServicer_to_server(QueueServicer(engine, readiness), rpcs.table.server)
    queue_pb2_grpc.add_CrashLogServiceServicer_to_server(CrashLogServicer(crashlog, readiness), rpcs.table.server)
    queue_pb2_grpc.add_ModelConfigServiceServicer_to_server(ModelConfigServicer(engine.configs, readiness), rpcs.table.server)
    queue_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(identities, readiness), rpcs.table.server)
    readiness.ready = True
    yield Mesh(rpcs, store, clock, readiness)
    await engine.close()
    await crashlog.close()


def _detail(failure: Failure, kind: type[Any]) -> Any:
    for detail in failure.status.details:
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    raise AssertionError(f"no {kind.__name__} in {failure}")


def _chat_result(text: str = "done") -> common_pb2.ChatResult:
    return common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content=text), finish_reason="stop")


# ---- QueueService: Submit and reads


async def test_submit_maps_the_request_to_a_stored_queued_job_and_back(mesh: Mesh) -> None:
    reply = await mesh.submit(
        "hello", request_id="r-1", client_id="c1", subject="alice", priority=common_pb2.PRIORITY_HIGH, timeout_seconds=60
    )
    job = reply.job
    assert (job.request_id, job.model, job.kind, job.priority) == (
        "r-1",
        CHAT,
        common_pb2.JOB_KIND_CHAT,
        common_pb2.PRIORITY_HIGH,
    )
    assert (job.state, job.position, reply.existing) == (common_pb2.QUEUED, 1, False)
    assert job.timings.deadline.ToSeconds() - job.timings.submitted_at.ToSeconds() == 60
    assert not reply.HasField("lease"), "no lease unasked"
    assert not job.HasField("chat"), "no body unless asked"
    stored = mesh.store.collections["jobs"]["r-1"]
    assert (stored["priority"], stored["kind"]) == (int(Priority.HIGH), int(Kind.CHAT))

    got = await mesh.call(QUEUE + "GetJob", queue_pb2.GetJobRequest(request_id="r-1", include_payload=True))
    assert got.job.chat.messages[0].content == "hello"
    again = await mesh.submit("hello", client_id="c1", subject="alice", idempotency_key="k")
    repeat = await mesh.submit("hello", client_id="c1", subject="alice", idempotency_key="k")
    assert (repeat.job.request_id, repeat.existing) == (again.job.request_id, True)


async def test_an_owner_accepting_a_lease_gets_it_with_the_submit_answer_and_only_then(mesh: Mesh) -> None:
    leased = await mesh.submit(request_id="own-1", owner_id="router-1", accept_lease=True)
    assert leased.job.state == common_pb2.RUNNING
    assert (leased.lease.request_id, leased.lease.attempt, leased.lease.ttl_ms) == ("own-1", 1, 5000)
    assert leased.lease.expires_at.ToSeconds() == int(mesh.clock.now + 5)

    unasked = await mesh.submit(request_id="own-2", owner_id="router-1")
    assert unasked.job.state == common_pb2.RUNNING
    assert not unasked.HasField("lease"), "granted, kept for AcquireJob"
    taken = await mesh.call(QUEUE + "AcquireJob", queue_pb2.AcquireJobRequest(request_id="own-2", worker_id="router-1"))
    assert taken.lease.request_id == "own-2"
    assert taken.job.chat.messages[0].content == "hi"

    full = await mesh.submit(request_id="own-3", owner_id="router-1", accept_lease=True)
    assert full.job.state == common_pb2.QUEUED, "no free slot"
    assert not full.HasField("lease")


async def test_submit_errors_carry_their_code_and_details(mesh: Mesh) -> None:
    bad = await mesh.submit(priority=7)
    assert isinstance(bad, Failure)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.message == "priority: 7 is not a priority"
    assert _detail(bad, error_details_pb2.BadRequest).field_violations[0].field == "priority"

    unknown = await mesh.submit(model="nope")
    assert isinstance(unknown, Failure)
    assert unknown.code == grpc.StatusCode.NOT_FOUND

    wrong_kind = await mesh.submit(model=OCR)
    assert isinstance(wrong_kind, Failure)
    assert wrong_kind.code == grpc.StatusCode.INVALID_ARGUMENT
    assert wrong_kind.message == "payload: model 'ocr-a' takes ocr requests"

    for _ in range(4):  # 2 running slots free + 2 waiting places
        assert not isinstance(await mesh.submit(), Failure)
    full = await mesh.submit()
    assert isinstance(full, Failure)
    assert full.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert full.message.startswith("model 'chat-a' is full: 0 running (max 2), 4 waiting (max 2); retry in ")
    assert _detail(full, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() > 0


async def test_an_rpc_before_recovery_is_unavailable_with_a_retry_delay(mesh: Mesh) -> None:
    mesh.readiness.ready = False
    early = await mesh.call(QUEUE + "GetJob", queue_pb2.GetJobRequest(request_id="r"))
    assert isinstance(early, Failure)
    assert early.code == grpc.StatusCode.UNAVAILABLE
    assert _detail(early, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 500


async def test_get_job_requires_an_id_and_answers_not_found_for_an_unknown_one(mesh: Mesh) -> None:
    empty = await mesh.call(QUEUE + "GetJob", queue_pb2.GetJobRequest())
    assert isinstance(empty, Failure)
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert _detail(empty, error_details_pb2.BadRequest).field_violations[0].field == "request_id"
    unknown = await mesh.call(QUEUE + "GetJob", queue_pb2.GetJobRequest(request_id="never"))
    assert isinstance(unknown, Failure)
    assert unknown.code == grpc.StatusCode.NOT_FOUND


# ---- QueueService: leases and results


async def _acquired(mesh: Mesh) -> queue_pb2.AcquireJobResponse:
    await mesh.submit("work", request_id="w-1")
    reply = await mesh.call(QUEUE + "AcquireJob", queue_pb2.AcquireJobRequest(worker_id="w1", models=[CHAT], wait_ms=100))
    assert isinstance(reply, queue_pb2.AcquireJobResponse)
    assert reply.lease.request_id == "w-1"
    return reply


async def test_a_worker_takes_heartbeats_and_completes_a_job(mesh: Mesh) -> None:
    acquired = await _acquired(mesh)
    lease = acquired.lease
    assert acquired.job.state == common_pb2.RUNNING
    assert acquired.job.chat.messages[0].content == "work"

    mesh.clock.now += 2
    beat = await mesh.call(
        QUEUE + "Heartbeat", queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id="w-1", progress=3, backend="b1")
    )
    assert (beat.cancel, beat.cancel_reason, beat.expires_at.ToSeconds()) == (False, "", int(mesh.clock.now + 5))

    complete = queue_pb2.CompleteJobRequest(lease_id=lease.lease_id, request_id="w-1", backend="b1")
    missing = await mesh.call(QUEUE + "CompleteJob", complete)
    assert isinstance(missing, Failure)
    assert missing.message == "result: a chat_result or ocr_result is required"
    complete.ocr_result.CopyFrom(common_pb2.OcrResult())
    wrong = await mesh.call(QUEUE + "CompleteJob", complete)
    assert isinstance(wrong, Failure)
    assert wrong.code == grpc.StatusCode.INVALID_ARGUMENT
    assert wrong.message == "result: a chat job takes a chat result"

    complete.chat_result.CopyFrom(_chat_result("42"))
    done = await mesh.call(QUEUE + "CompleteJob", complete)
    assert (done.job.state, done.job.backend, done.job.chat_result.message.content) == (common_pb2.SUCCEEDED, "b1", "42")
    assert done.job.timings.service_ms == 2000.0
    stale = await mesh.call(QUEUE + "Heartbeat", queue_pb2.HeartbeatRequest(lease_id=lease.lease_id, request_id="w-1"))
    assert (stale.cancel, stale.cancel_reason) == (True, "lease lost")


async def test_a_retryable_failure_requeues_the_job_with_its_error_mapped(mesh: Mesh) -> None:
    lease = (await _acquired(mesh)).lease
    error = common_pb2.JobError(code="UNAVAILABLE", message="backend down", backend="b2")
    failed = await mesh.call(
        QUEUE + "FailJob", queue_pb2.FailJobRequest(lease_id=lease.lease_id, request_id="w-1", error=error, retryable=True)
    )
    job = failed.job
    assert (job.state, job.attempt, job.max_attempts) == (common_pb2.QUEUED, 1, 3)
    first = job.attempt_errors[0]
    assert (first.code, first.message, first.attempt, first.backend) == ("UNAVAILABLE", "backend down", 1, "b2")
    again = await mesh.call(
        QUEUE + "FailJob", queue_pb2.FailJobRequest(lease_id=lease.lease_id, request_id="w-1", error=error, retryable=True)
    )
    assert isinstance(again, Failure)
    assert again.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_acquire_refuses_a_negative_wait(mesh: Mesh) -> None:
    negative = await mesh.call(QUEUE + "AcquireJob", queue_pb2.AcquireJobRequest(worker_id="w1", wait_ms=-1))
    assert isinstance(negative, Failure)
    assert negative.code == grpc.StatusCode.INVALID_ARGUMENT
    assert negative.message == "wait_ms: must be >= 0"
    nothing = await mesh.call(QUEUE + "AcquireJob", queue_pb2.AcquireJobRequest(worker_id="w1", wait_ms=0))
    assert not nothing.HasField("job")
    assert not nothing.HasField("lease")


async def test_cancel_of_a_queued_job_ends_it_at_once(mesh: Mesh) -> None:
    await mesh.submit(request_id="c-1")
    cancelled = await mesh.call(QUEUE + "CancelJob", queue_pb2.CancelJobRequest(request_id="c-1", requested_by="bob"))
    assert cancelled.job.state == common_pb2.CANCELLED
    assert (cancelled.job.error.code, cancelled.job.error.message) == ("CANCELLED", "cancelled by bob")


# ---- QueueService: watching, history, statistics


async def test_watch_job_reports_the_place_then_the_end(mesh: Mesh) -> None:
    await mesh.submit(request_id="v-1")
    first, failure = await mesh.rpcs.stream(QUEUE + "WatchJob", queue_pb2.WatchJobRequest(request_id="v-1"), limit=1)
    assert failure is None
    assert (first[0].event, first[0].job.position) == (queue_pb2.WATCH_EVENT_POSITION, 1)

    await mesh.call(QUEUE + "CancelJob", queue_pb2.CancelJobRequest(request_id="v-1"))
    ended, failure = await mesh.rpcs.stream(QUEUE + "WatchJob", queue_pb2.WatchJobRequest(request_id="v-1"))
    assert failure is None
    assert [(e.event, e.job.state) for e in ended] == [(queue_pb2.WATCH_EVENT_FINISHED, common_pb2.CANCELLED)]

    _, unknown = await mesh.rpcs.stream(QUEUE + "WatchJob", queue_pb2.WatchJobRequest(request_id="nope"))
    assert unknown is not None
    assert unknown.code == grpc.StatusCode.NOT_FOUND


async def test_list_jobs_filters_and_rejects_unknown_enum_values(mesh: Mesh) -> None:
    for rid in ("l-1", "l-2", "l-3"):
        mesh.clock.now += 1
        await mesh.submit(request_id=rid, client_id="c9" if rid != "l-2" else "other")
    listed = await mesh.call(QUEUE + "ListJobs", queue_pb2.ListJobsRequest(state=common_pb2.QUEUED, client_id="c9", page_size=1))
    assert [j.request_id for j in listed.jobs] == ["l-3"]
    assert listed.next_page_token
    rest = await mesh.call(
        QUEUE + "ListJobs",
        queue_pb2.ListJobsRequest(state=common_pb2.QUEUED, client_id="c9", page_token=listed.next_page_token),
    )
    assert [j.request_id for j in rest.jobs] == ["l-1"]
    assert not rest.next_page_token
    bad = await mesh.call(QUEUE + "ListJobs", queue_pb2.ListJobsRequest(state=9))  # type: ignore[arg-type]  # a number the enum lacks
    assert isinstance(bad, Failure)
    assert bad.message == "state: 9 is not a job state"


async def test_queue_stats_series_and_usage_map_the_model_counters(mesh: Mesh) -> None:
    await mesh.submit(owner_id="r1")
    await mesh.submit()
    stats = await mesh.call(QUEUE + "GetQueueStats", queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert (stats.processing, stats.waiting, stats.utilization, stats.max_concurrent, stats.max_waiting) == (1, 1, 0.5, 2, 2)

    series = await mesh.call(QUEUE + "GetQueueSeries", queue_pb2.GetQueueSeriesRequest(model=CHAT, minutes=2))
    assert len(series.minutes) == 2
    assert series.bucket_seconds == 60
    assert series.minutes[-1].peak_running == 1
    whole = await mesh.call(QUEUE + "GetQueueSeries", queue_pb2.GetQueueSeriesRequest(model=CHAT))
    assert len(whole.minutes) == 60
    too_long = await mesh.call(QUEUE + "GetQueueSeries", queue_pb2.GetQueueSeriesRequest(model=CHAT, minutes=61))
    assert isinstance(too_long, Failure)
    assert too_long.message == "minutes: between 1 and 60, not 61"
    unknown = await mesh.call(QUEUE + "GetQueueSeries", queue_pb2.GetQueueSeriesRequest(model="nope"))
    assert isinstance(unknown, Failure)
    assert unknown.code == grpc.StatusCode.NOT_FOUND

    usage = await mesh.call(QUEUE + "GetUsage", queue_pb2.GetUsageRequest())
    assert usage.since.ToSeconds() == int(mesh.clock.now - 7 * 86_400)
    hour = hour_of_week(epoch_hour(mesh.clock.now))
    assert [(b.model, b.hour_of_week, b.count) for b in usage.buckets] == [(CHAT, hour, 2)]
    too_wide = await mesh.call(QUEUE + "GetUsage", queue_pb2.GetUsageRequest(window_days=367))
    assert isinstance(too_wide, Failure)
    assert too_wide.message == "window_days: between 1 and 366"


# ---- QueueService.Session


async def test_session_runs_each_call_as_its_unary_rpc_and_answers_errors_in_stream(mesh: Mesh) -> None:
    chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="s")])
    replies = await mesh.rpcs.bidi(
        QUEUE + "Session",
        [
            queue_pb2.SessionRequest(call_id=1, submit=queue_pb2.SubmitRequest(model=CHAT, chat=chat, request_id="s-1")),
            queue_pb2.SessionRequest(call_id=2, get_job=queue_pb2.GetJobRequest(request_id="missing")),
            queue_pb2.SessionRequest(call_id=3),
            queue_pb2.SessionRequest(call_id=4, submit=queue_pb2.SubmitRequest(model=CHAT, chat=chat, priority=9)),  # type: ignore[arg-type]  # not a priority
        ],
    )
    by_id = {r.call_id: r for r in replies}
    assert sorted(by_id) == [1, 2, 3, 4]
    assert by_id[1].submit.job.request_id == "s-1"
    assert by_id[1].submit.job.state == common_pb2.QUEUED
    assert by_id[2].error.code == code_pb2.NOT_FOUND
    assert (by_id[3].error.code, by_id[3].error.message) == (code_pb2.INVALID_ARGUMENT, "call: required (one of the job calls)")
    assert (by_id[4].error.code, by_id[4].error.message) == (code_pb2.INVALID_ARGUMENT, "priority: 9 is not a priority")
    stored = await mesh.call(QUEUE + "GetJob", queue_pb2.GetJobRequest(request_id="s-1"))
    assert stored.job.state == common_pb2.QUEUED


# ---- CrashLogService, ModelConfigService, IdentityService


async def test_crash_events_are_recorded_and_listed_with_every_field(mesh: Mesh) -> None:
    crashes = "/aigw.queue.v1.CrashLogService/"
    event = queue_pb2.CrashEvent(
        kind=queue_pb2.CRASH_KIND_BACKEND_CRASH,
        service="textgen",
        model=CHAT,
        backend="b1",
        message="engine exited 137",
        details={"exit": "137"},
        log_tail=["oom"],
    )
    recorded = await mesh.call(crashes + "RecordCrash", queue_pb2.RecordCrashRequest(event=event))
    assert recorded.event.id
    assert recorded.event.at.ToSeconds() == int(mesh.clock.now)
    listed = await mesh.call(crashes + "ListCrashes", queue_pb2.ListCrashesRequest(service="textgen"))
    [got] = listed.events
    assert (got.kind, got.model, got.backend, got.message) == (event.kind, CHAT, "b1", "engine exited 137")
    assert (dict(got.details), list(got.log_tail)) == ({"exit": "137"}, ["oom"])
    kindless = await mesh.call(crashes + "RecordCrash", queue_pb2.RecordCrashRequest(event=queue_pb2.CrashEvent(message="x")))
    assert isinstance(kindless, Failure)
    assert kindless.code == grpc.StatusCode.INVALID_ARGUMENT
    assert _detail(kindless, error_details_pb2.BadRequest).field_violations[0].field == "event.kind"


async def test_model_config_changes_are_versioned_and_a_stale_version_is_aborted(mesh: Mesh) -> None:
    configs = "/aigw.queue.v1.ModelConfigService/"
    first = await mesh.call(configs + "GetModelConfig", queue_pb2.GetModelConfigRequest(model=CHAT))
    assert (first.config.version, first.config.max_concurrent, first.config.enabled) == (0, 2, True)
    patch = queue_pb2.ModelConfigPatch(max_concurrent=4)
    update = queue_pb2.UpdateModelConfigRequest(model=CHAT, expected_version=0, patch=patch, updated_by="ops")
    updated = await mesh.call(configs + "UpdateModelConfig", update)
    assert (updated.config.version, updated.config.max_concurrent, updated.config.updated_by) == (1, 4, "ops")
    stale = await mesh.call(configs + "UpdateModelConfig", update)
    assert isinstance(stale, Failure)
    assert stale.code == grpc.StatusCode.ABORTED
    ocr_patch = queue_pb2.ModelConfigPatch(default_resolution=common_pb2.RESOLUTION_GUNDAM)
    ocr = await mesh.call(configs + "UpdateModelConfig", queue_pb2.UpdateModelConfigRequest(model=OCR, patch=ocr_patch))
    assert ocr.config.default_resolution == common_pb2.RESOLUTION_GUNDAM
    listed = await mesh.call(configs + "ListModelConfigs", queue_pb2.ListModelConfigsRequest())
    assert [c.model for c in listed.configs] == [CHAT, OCR]


async def test_users_are_mapped_without_their_password_hash(mesh: Mesh) -> None:
    identity = "/aigw.queue.v1.IdentityService/"
    user = queue_pb2.User(username="ann", role="admin", password_hash="$argon2id$x", allowed_client_ids=["c1"])
    created = await mesh.call(identity + "CreateUser", queue_pb2.CreateUserRequest(user=user))
    assert (created.user.username, created.user.role, list(created.user.allowed_client_ids)) == ("ann", "admin", ["c1"])
    assert created.user.password_hash == "", "a stored hash never leaves the queue"
    got = await mesh.call(identity + "GetUser", queue_pb2.GetUserRequest(username="ann"))
    assert got.user.created_at.ToSeconds() == int(mesh.clock.now)
    again = await mesh.call(identity + "CreateUser", queue_pb2.CreateUserRequest(user=user))
    assert isinstance(again, Failure)
    assert again.code == grpc.StatusCode.ALREADY_EXISTS
    unknown = await mesh.call(identity + "GetUser", queue_pb2.GetUserRequest(username="nobody"))
    assert isinstance(unknown, Failure)
    assert unknown.code == grpc.StatusCode.NOT_FOUND


def test_the_domain_enums_mirror_the_proto_enums() -> None:
    assert {s.name: int(s) for s in State} == {
        n: v for n, v in common_pb2.JobState.items() if v != common_pb2.JOB_STATE_UNSPECIFIED
    }
    assert {f"JOB_KIND_{k.name}": int(k) for k in Kind} == {
        n: v for n, v in common_pb2.JobKind.items() if v != common_pb2.JOB_KIND_UNSPECIFIED
    }
    assert {f"PRIORITY_{p.name}": int(p) for p in Priority} == {
        n: v for n, v in common_pb2.Priority.items() if v != common_pb2.PRIORITY_UNSPECIFIED
    }
