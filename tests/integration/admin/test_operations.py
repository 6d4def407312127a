"""Dynamic config, queue metrics, request history and the auto-switch setting through the admin service and the real queue."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import Mesh, bad_field, bearer, mesh, raw_config, retry_delay

pytestmark = pytest.mark.timeout(120)

CHAT = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="hello")])


@pytest.fixture
async def gw(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    async with mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as running:
        yield running


async def submit(gw: Mesh, model: str = "chat-a", client: str = "app-1") -> Any:
    request = queue_pb2.SubmitRequest(model=model, client_id=client, subject=client, chat=CHAT)
    return await gw.queue.Submit(request, timeout=10)


async def get_config(gw: Mesh, md: Any, model: str = "chat-a") -> admin_pb2.ModelConfig:
    reply = await gw.admin.GetModelConfig(admin_pb2.GetModelConfigRequest(model=model), metadata=md, timeout=10)
    config: admin_pb2.ModelConfig = reply.config
    return config


async def update(gw: Mesh, md: Any, version: int, **patch: Any) -> admin_pb2.ModelConfig:
    request = admin_pb2.UpdateModelConfigRequest(
        model="chat-a", expected_version=version, patch=admin_pb2.ModelConfigPatch(**patch)
    )
    reply = await gw.admin.UpdateModelConfig(request, metadata=md, timeout=10)
    config: admin_pb2.ModelConfig = reply.config
    return config


async def test_max_waiting_change_applies_to_admission_at_once(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    before = await get_config(gw, md)
    assert (before.max_concurrent, before.max_waiting) == (10, 10)

    after = await update(gw, md, before.version, max_waiting=2)

    assert (after.version, after.max_waiting, after.updated_by) == (before.version + 1, 2, "admin")
    for _ in range(12):
        await submit(gw)
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await submit(gw)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delay(full.value) is not None

    await update(gw, md, after.version, max_waiting=3)
    await submit(gw)


async def test_stale_version_is_aborted_and_changes_nothing(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    current = await get_config(gw, md)
    await update(gw, md, current.version, max_concurrent=4)

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await update(gw, md, current.version, max_concurrent=6)

    assert stale.value.code() == grpc.StatusCode.ABORTED
    now = await get_config(gw, md)
    assert (now.version, now.max_concurrent) == (current.version + 1, 4)


async def test_bad_changes_name_the_field_and_change_nothing(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    current = await get_config(gw, md)
    for patch, field in (
        ({"max_waiting": -1}, "patch.max_waiting"),
        ({"max_attempts": 11}, "patch.max_attempts"),
        ({"default_params": common_pb2.GenerationParams(temperature=5)}, "patch.default_params.temperature"),
        ({"default_resolution": common_pb2.RESOLUTION_LARGE}, "patch.default_resolution"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await update(gw, md, current.version, **patch)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_field(bad.value) == field
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gw.admin.GetModelConfig(admin_pb2.GetModelConfigRequest(model="nope"), metadata=md, timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await get_config(gw, md)).version == current.version


async def test_default_generation_parameters_are_stored(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    current = await get_config(gw, md)

    changed = await update(gw, md, current.version, default_params=common_pb2.GenerationParams(max_tokens=32, temperature=0.5))

    assert (changed.default_params.max_tokens, changed.default_params.temperature) == (32, 0.5)
    assert (await get_config(gw, md)).default_params.max_tokens == 32


async def test_queue_stats_and_request_history(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    ids = [(await submit(gw, client=f"app-{i % 2}")).job.request_id for i in range(7)]

    stats = await gw.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(model="chat-a"), metadata=md, timeout=10)
    assert stats.model == "chat-a"
    assert stats.processing + stats.waiting == 7
    assert stats.max_concurrent == 10

    first = await gw.admin.ListRequests(admin_pb2.ListRequestsRequest(model="chat-a", page_size=5), metadata=md, timeout=10)
    assert len(first.requests) == 5
    assert first.next_page_token
    rest = await gw.admin.ListRequests(
        admin_pb2.ListRequestsRequest(model="chat-a", page_size=5, page_token=first.next_page_token), metadata=md, timeout=10
    )
    seen = [r.request_id for r in [*first.requests, *rest.requests]]
    assert sorted(seen) == sorted(ids)
    assert seen == list(reversed(ids))
    only = await gw.admin.ListRequests(admin_pb2.ListRequestsRequest(client_id="app-1"), metadata=md, timeout=10)
    assert {r.client_id for r in only.requests} == {"app-1"}
    assert len(only.requests) == 3

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await gw.admin.ListRequests(admin_pb2.ListRequestsRequest(page_size=-1), metadata=md, timeout=10)
    assert bad_field(bad.value) == "page_size"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gw.admin.GetQueueStats(admin_pb2.GetQueueStatsRequest(model="nope"), metadata=md, timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_crash_log_filters(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    for service, model, kind in (
        ("textgen", "chat-a", queue_pb2.CRASH_KIND_BACKEND_CRASH),
        ("router", "chat-a", queue_pb2.CRASH_KIND_RETRY),
        ("textgen", "chat-b", queue_pb2.CRASH_KIND_ENGINE_RESTART),
    ):
        event = queue_pb2.CrashEvent(service=service, model=model, kind=kind, message=f"{service} {model}")
        await gw.crashes.RecordCrash(queue_pb2.RecordCrashRequest(event=event), timeout=10)

    async def listed(**filters: Any) -> list[str]:
        reply = await gw.admin.ListCrashes(admin_pb2.ListCrashesRequest(**filters), metadata=md, timeout=10)
        return [e.message for e in reply.events]

    assert await listed() == ["textgen chat-b", "router chat-a", "textgen chat-a"]
    assert await listed(service="textgen") == ["textgen chat-b", "textgen chat-a"]
    assert await listed(model="chat-a", kind=admin_pb2.CRASH_KIND_RETRY) == ["router chat-a"]
    now = int(time.time())
    assert len(await listed(since=Timestamp(seconds=now - 600), until=Timestamp(seconds=now + 600))) == 3
    assert await listed(since=Timestamp(seconds=now + 600)) == []
    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await listed(since=Timestamp(seconds=now), until=Timestamp(seconds=now - 1))
    assert bad_field(backwards.value) == "until"


async def test_auto_switch_can_be_turned_off_and_on_and_stays_so(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> None:
    raw = raw_config(ferretdb.uri, db_name, tmp_path, auto_switch={"enabled": True, "pattern_window_days": 14})
    async with mesh(raw) as gw:
        md = bearer(await gw.admin_token())
        shown = await gw.admin.GetAutoSwitch(admin_pb2.GetAutoSwitchRequest(), metadata=md, timeout=10)
        assert (shown.enabled, shown.window_days, shown.demand_margin) == (True, 14, 2.0)
        assert not shown.plan
        reply = await gw.admin.SetAutoSwitch(admin_pb2.SetAutoSwitchRequest(enabled=False), metadata=md, timeout=10)
        assert not reply.enabled
    async with mesh(raw) as gw:
        md = bearer(await gw.admin_token())
        assert not (await gw.admin.GetAutoSwitch(admin_pb2.GetAutoSwitchRequest(), metadata=md, timeout=10)).enabled
        assert not await gw.admin_service.switcher.enabled()


async def run_to_the_end(gw: Mesh, n: int) -> list[str]:
    """Submits `n` jobs and runs each as a router worker would, to SUCCEEDED."""
    done = []
    for _ in range(n):
        rid = (await submit(gw)).job.request_id
        granted = await gw.queue.AcquireJob(
            queue_pb2.AcquireJobRequest(worker_id="w1", models=["chat-a"], wait_ms=2000), timeout=10
        )
        assert granted.job.request_id == rid
        result = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="hi"), finish_reason="stop")
        request = queue_pb2.CompleteJobRequest(lease_id=granted.lease.lease_id, request_id=rid, backend="b1", chat_result=result)
        await gw.queue.CompleteJob(request, timeout=10)
        done.append(rid)
    return done


async def test_queue_series_shows_finished_jobs_to_admins_only(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    await run_to_the_end(gw, 4)
    cancelled = (await submit(gw)).job.request_id
    await gw.queue.CancelJob(queue_pb2.CancelJobRequest(request_id=cancelled), timeout=10)

    reply = await gw.admin.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a"), metadata=md, timeout=10)
    assert reply.model == "chat-a"
    assert len(reply.minutes) == 60
    assert sum(m.succeeded for m in reply.minutes) == 4
    assert sum(m.cancelled for m in reply.minutes) == 1
    assert sum(m.total_ms.count for m in reply.minutes) == 5
    assert max(m.peak_waiting for m in reply.minutes) >= 1
    short = await gw.admin.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a", minutes=2), metadata=md, timeout=10)
    assert [m.start for m in short.minutes] == [m.start for m in reply.minutes[-2:]]

    for minutes in (0, 61):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            request = admin_pb2.GetQueueSeriesRequest(model="chat-a", minutes=minutes)
            await gw.admin.GetQueueSeries(request, metadata=md, timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_field(bad.value) == "minutes"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gw.admin.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="nope"), metadata=md, timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    created = admin_pb2.CreateUserRequest(username="plain", password="plain-password-123", role="user")
    await gw.admin.CreateUser(created, metadata=md, timeout=10)
    user = bearer((await gw.login("plain", "plain-password-123")).access_token)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.admin.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a"), metadata=user, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await gw.admin.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a"), timeout=10)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
