"""Admission over real gRPC on FerretDB: capacity, bad input, idempotency, runtime limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pymongo import MongoClient
from pymongo.database import Database

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.config import GatewayConfig
from harness.ferretdb import FerretDBProcess
from tests.integration.queue.conftest import CHAT, OCR, Queue, start_queue

Doc = dict[str, Any]


@pytest.fixture
def db(ferretdb: FerretDBProcess, db_name: str) -> Iterator[Database[Doc]]:
    """The test's database, read directly to check what was (not) written."""
    client: MongoClient[Doc] = MongoClient(ferretdb.uri, directConnection=True)
    with client:
        yield client[db_name]


def retry_delay(err: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    raise AssertionError("no RetryInfo")


async def fill(queue: Queue, running: int, waiting: int) -> list[str]:
    """`running` jobs leased by their owners, then `waiting` queued jobs."""
    ids = []
    for i in range(running):
        sub = await queue.submit(f"run {i}", owner_id="router-1")
        granted = await queue.acquire(request_id=sub.job.request_id, wait_ms=0)
        assert granted.lease.lease_id
        ids.append(sub.job.request_id)
    for i in range(waiting):
        sub = await queue.submit(f"wait {i}")
        assert sub.job.state == common_pb2.QUEUED
        ids.append(sub.job.request_id)
    return ids


async def test_the_21st_submit_is_refused_at_once_with_retry_info_and_writes_nothing(queue: Queue, db: Database[Doc]) -> None:
    ids = await fill(queue, running=10, waiting=10)
    stats = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert (stats.processing, stats.waiting, stats.utilization) == (10, 10, 1.0)
    assert db.jobs.count_documents({}) == 20

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.submit("one too many", request_id="the-21st", idempotency_key="k21", client_id="c1")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "full" in (err.value.details() or "")
    assert retry_delay(err.value) > 0

    assert db.jobs.count_documents({}) == 20
    assert sorted(d["_id"] for d in db.jobs.find({}, {"_id": 1})) == sorted(ids)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await queue.jobs.GetJob(queue_pb2.GetJobRequest(request_id="the-21st"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_submits_get_clear_errors_and_write_nothing(queue: Queue, db: Database[Doc]) -> None:
    cases: list[tuple[queue_pb2.SubmitRequest, grpc.StatusCode, str]] = [
        (queue_pb2.SubmitRequest(model="no-such-model", chat=common_pb2.ChatJob()), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (queue_pb2.SubmitRequest(model=CHAT), grpc.StatusCode.INVALID_ARGUMENT, "payload"),
        (queue_pb2.SubmitRequest(model=OCR, chat=common_pb2.ChatJob()), grpc.StatusCode.INVALID_ARGUMENT, "ocr"),
        (
            queue_pb2.SubmitRequest(model=CHAT, chat=common_pb2.ChatJob(), request_id="a/b"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id",
        ),
        (
            queue_pb2.SubmitRequest(model=CHAT, chat=common_pb2.ChatJob(), timeout_seconds=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "timeout",
        ),
        (
            queue_pb2.SubmitRequest(model=CHAT, chat=common_pb2.ChatJob(), priority=9),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
            "priority",
        ),
    ]
    for request, code, word in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await queue.jobs.Submit(request)
        assert err.value.code() == code, request
        assert word in (err.value.details() or ""), err.value.details()

    config = (await queue.configs.GetModelConfig(queue_pb2.GetModelConfigRequest(model=CHAT))).config
    patch = queue_pb2.ModelConfigPatch(enabled=False)
    await queue.configs.UpdateModelConfig(
        queue_pb2.UpdateModelConfigRequest(model=CHAT, expected_version=config.version, patch=patch)
    )
    with pytest.raises(grpc.aio.AioRpcError) as disabled:
        await queue.submit()
    assert disabled.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "disabled" in (disabled.value.details() or "")
    assert db.jobs.count_documents({}) == 0


async def test_a_repeated_idempotency_key_returns_the_first_job(queue: Queue, db: Database[Doc]) -> None:
    first = await queue.submit("once", client_id="c1", idempotency_key="key-1")
    again = await queue.submit("twice", client_id="c1", idempotency_key="key-1")
    assert not first.existing
    assert again.existing
    assert again.job.request_id == first.job.request_id
    other_client = await queue.submit("mine", client_id="c2", idempotency_key="key-1")
    assert not other_client.existing
    assert other_client.job.request_id != first.job.request_id
    # Another user allowed the same client id: a new request, never the first user's.
    other_owner = await queue.submit("theirs", client_id="c1", subject="mallory", idempotency_key="key-1")
    assert not other_owner.existing
    assert other_owner.job.request_id != first.job.request_id
    first_again = await queue.submit("twice", client_id="c1", idempotency_key="key-1")
    assert first_again.job.request_id == first.job.request_id

    granted = await queue.acquire(models=[CHAT])
    await queue.complete(granted.lease)
    after = await queue.submit("later", client_id="c1", idempotency_key="key-1")
    assert after.existing
    assert after.job.request_id == first.job.request_id
    assert db.jobs.count_documents({}) == 3


async def test_an_idempotent_repeat_is_answered_even_when_the_model_is_full(
    make_queue: Callable[..., GatewayConfig], db: Database[Doc]
) -> None:
    queue = await start_queue(make_queue(max_waiting=1))
    try:
        cfg = queue_pb2.ModelConfigPatch(max_concurrent=1)
        await queue.configs.UpdateModelConfig(queue_pb2.UpdateModelConfigRequest(model=CHAT, patch=cfg))
        first = await queue.submit(client_id="c1", idempotency_key="k")
        await queue.submit(client_id="c1", idempotency_key="other")
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await queue.submit(client_id="c1", idempotency_key="third")
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        again = await queue.submit(client_id="c1", idempotency_key="k")
        assert again.existing
        assert again.job.request_id == first.job.request_id
        assert db.jobs.count_documents({}) == 2
    finally:
        await queue.stop()


async def test_lowering_max_waiting_at_runtime_changes_admission_at_once(queue: Queue) -> None:
    await fill(queue, running=10, waiting=0)
    config = (await queue.configs.GetModelConfig(queue_pb2.GetModelConfigRequest(model=CHAT))).config
    assert (config.version, config.max_waiting) == (0, 10)
    change = queue_pb2.UpdateModelConfigRequest(
        model=CHAT, expected_version=0, patch=queue_pb2.ModelConfigPatch(max_waiting=2), updated_by="ops"
    )
    updated = (await queue.configs.UpdateModelConfig(change)).config
    assert (updated.version, updated.max_waiting, updated.updated_by) == (1, 2, "ops")
    await queue.submit("1")
    await queue.submit("2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.submit("3")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stats = await queue.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=CHAT))
    assert (stats.waiting, stats.max_waiting) == (2, 2)

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await queue.configs.UpdateModelConfig(change)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    raise_it = queue_pb2.UpdateModelConfigRequest(model=CHAT, expected_version=1, patch=queue_pb2.ModelConfigPatch(max_waiting=3))
    await queue.configs.UpdateModelConfig(raise_it)
    await queue.submit("3 fits now")


async def test_concurrent_submits_are_each_stored_once(queue: Queue, db: Database[Doc]) -> None:
    same_key = await asyncio.gather(*(queue.submit(f"copy {i}", client_id="c1", idempotency_key="same") for i in range(5)))
    assert len({r.job.request_id for r in same_key}) == 1
    assert sorted(r.existing for r in same_key) == [False, True, True, True, True]

    done = await queue.submit("finished long ago", request_id="old-1", owner_id="r1", accept_lease=True)
    await queue.complete(done.lease)
    queue.service.engine.jobs.forget_finished()
    ids = [f"new-{i}" for i in range(4)] + ["old-1"] + [f"new-{i}" for i in range(4, 8)]
    batch = await asyncio.gather(*(queue.submit(rid, request_id=rid) for rid in ids), return_exceptions=True)
    reused = batch.pop(4)
    assert isinstance(reused, grpc.aio.AioRpcError)
    assert reused.code() == grpc.StatusCode.ALREADY_EXISTS, "the duplicate in a batched insert is refused alone"
    assert all(isinstance(r, queue_pb2.SubmitResponse) for r in batch)
    assert db.jobs.count_documents({}) == 1 + 1 + 8
