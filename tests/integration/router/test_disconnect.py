"""A client that goes away stops its job: gRPC cancel and deadline, REST connections closed through the edge.

The mesh's textgen is attached to a bench.upstream that streams slowly (3000 tokens, 2 ms each: 6 s of
"engine" time) and answers unary calls after 6 s; the upstream records when each client connection of
it closed, so the tests see the engine request end, not only the job's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import (
    MODEL,
    OCR_MODEL,
    Mesh,
    Upstream,
    bearer,
    edge_before,
    mesh_on,
    ocr_backend,
    textgen_backend,
    upstreams,
)
from tests.unit.ocr.samples import scanned_pdf, text_image

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
LONG_TOKENS = 3000
LONG_SECONDS = 6.0
# The budget from the client's leaving to the engine's connection closing; a shared CI machine gets some slack.
CANCEL_BUDGET = 0.1
TALK = common_pb2.ChatMessage(role="user", content="talk")
SLACK = 0.15


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    options = ("--answer", "tok", "--tokens", str(LONG_TOKENS), "--chunk-delay-ms", "2", "--delay-ms", str(LONG_SECONDS * 1000))
    with upstreams(options) as (up,):
        yield up


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(ferretdb: FerretDBProcess, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> AsyncIterator[Mesh]:
    backends = [textgen_backend("tg-0", upstream), ocr_backend()]
    async with mesh_on(ferretdb, tmp_path_factory.mktemp("router-gone"), backends) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge_port(mesh: Mesh) -> AsyncIterator[int]:
    async with edge_before(mesh) as port:
        yield port


def client() -> str:
    return f"gone-{uuid.uuid4().hex[:8]}"


def meta(mesh: Mesh, client_id: str) -> tuple[tuple[str, str], ...]:
    return bearer(mesh.token("alice", client_ids=(client_id,)), x_client_id=client_id)


def chat(max_tokens: int = LONG_TOKENS, **fields: Any) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(model=MODEL, messages=[TALK], max_tokens=max_tokens, **fields)


async def only_job(mesh: Mesh, client_id: str) -> common_pb2.Job:
    """The one job of `client_id`, once it exists."""
    found: list[common_pb2.Job] = []

    async def look() -> bool:
        reply = await mesh.jobs.ListJobs(queue_pb2.ListJobsRequest(client_id=client_id))
        found[:] = list(reply.jobs)
        return bool(found)

    deadline = time.monotonic() + 10
    while not await look():
        assert time.monotonic() < deadline, f"no job of {client_id}"
        await asyncio.sleep(0.02)
    assert len(found) == 1, found
    return found[0]


async def finished(mesh: Mesh, request_id: str, timeout: float = 10.0) -> common_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job: common_pb2.Job = (await mesh.jobs.GetJob(queue_pb2.GetJobRequest(request_id=request_id))).job
        if job.state in (common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED):
            return job
        assert time.monotonic() < deadline, f"{request_id} still {common_pb2.JobState.Name(job.state)}"
        await asyncio.sleep(0.02)


async def engine_gone(upstream: Upstream, request_id: str) -> float:
    """When the engine's connection for `request_id` closed (wall clock), waiting for it up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        gone = await asyncio.to_thread(upstream.gone)
        if request_id in gone:
            return gone[request_id]
        assert time.monotonic() < deadline, f"the engine request of {request_id} is still open"
        await asyncio.sleep(0.02)


async def assert_stopped(mesh: Mesh, upstream: Upstream, request_id: str, left_at: float) -> common_pb2.Job:
    """The engine request ended within the budget of the client's leaving, and the job is CANCELLED for that reason."""
    closed = await engine_gone(upstream, request_id)
    assert closed - left_at < CANCEL_BUDGET + SLACK, f"the engine request ended {closed - left_at:.3f} s after the client left"
    job = await finished(mesh, request_id)
    assert common_pb2.JobState.Name(job.state) == "CANCELLED", job
    assert "client went away" in job.error.message, job.error
    ran = job.timings.finished_at.ToNanoseconds() / 1e9 - job.timings.started_at.ToNanoseconds() / 1e9
    assert ran < LONG_SECONDS / 3, f"the job ran {ran:.2f} s of its {LONG_SECONDS} s"
    return job


# gRPC


async def test_a_cancelled_stream_chat_stops_the_job_and_the_engine_request(mesh: Mesh, upstream: Upstream) -> None:
    cid = client()
    request = router_pb2.StreamChatRequest(model=MODEL, messages=[TALK], max_tokens=LONG_TOKENS)
    call = mesh.router.StreamChat(request, metadata=meta(mesh, cid))
    request_id, deltas = "", 0
    started = time.monotonic()
    async for reply in call:
        request_id = reply.request_id
        deltas += bool(reply.delta)
        if time.monotonic() - started > 0.5 and deltas:
            break
    call.cancel()
    left_at = time.time()
    await assert_stopped(mesh, upstream, request_id, left_at)


async def test_a_chat_past_its_client_deadline_stops_the_job_and_the_engine_request(mesh: Mesh, upstream: Upstream) -> None:
    cid = client()
    started = time.time()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await mesh.router.Chat(chat(), metadata=meta(mesh, cid), timeout=0.5)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    job = await only_job(mesh, cid)
    await assert_stopped(mesh, upstream, job.request_id, started + 0.5)


async def test_a_cancelled_chat_stops_the_job(mesh: Mesh, upstream: Upstream) -> None:
    cid = client()
    call = mesh.router.Chat(chat(), metadata=meta(mesh, cid))
    await asyncio.sleep(0.5)
    call.cancel()
    left_at = time.time()
    job = await only_job(mesh, cid)
    await assert_stopped(mesh, upstream, job.request_id, left_at)


async def test_a_chat_whose_client_leaves_while_it_is_admitted_is_cancelled(mesh: Mesh) -> None:
    """Deadlines so short that they pass during the Submit to the queue: whatever was admitted is cancelled."""
    cid = client()
    for timeout in (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03):
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await mesh.router.Chat(chat(), metadata=meta(mesh, cid), timeout=timeout)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.3)
    reply = await mesh.jobs.ListJobs(queue_pb2.ListJobsRequest(client_id=cid))
    assert reply.jobs, "no call lived long enough to be admitted"
    for job in reply.jobs:
        job = await finished(mesh, job.request_id, timeout=2)
        assert common_pb2.JobState.Name(job.state) == "CANCELLED", job
        assert "client went away" in job.error.message, job.error


async def test_calls_cut_by_a_graceful_shutdown_leave_their_jobs_to_another_worker(mesh: Mesh) -> None:
    cid = client()
    mesh.router_service.draining()
    try:
        call = mesh.router.Chat(chat(), metadata=meta(mesh, cid))
        job = await only_job(mesh, cid)
        call.cancel()
        await asyncio.sleep(0.3)
        again = (await mesh.jobs.GetJob(queue_pb2.GetJobRequest(request_id=job.request_id))).job
        assert common_pb2.JobState.Name(again.state) in ("QUEUED", "RUNNING"), again
    finally:
        mesh.router_service.own.draining = False
    await mesh.router.CancelRequest(router_pb2.CancelRequestRequest(request_id=job.request_id), metadata=meta(mesh, cid))
    assert common_pb2.JobState.Name((await finished(mesh, job.request_id)).state) == "CANCELLED"


async def test_an_async_chat_whose_submitter_leaves_still_succeeds(mesh: Mesh) -> None:
    cid = client()
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        reply = await stub.Chat(chat(max_tokens=200, async_mode=True), metadata=meta(mesh, cid))
    job = await finished(mesh, reply.request_id)
    assert common_pb2.JobState.Name(job.state) == "SUCCEEDED", job.error


async def test_a_job_that_finished_is_unchanged_when_its_client_leaves(mesh: Mesh) -> None:
    cid = client()
    async with grpc.aio.insecure_channel(mesh.router_address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.StreamChatRequest(model=MODEL, messages=[TALK], max_tokens=20)
        call = stub.StreamChat(request, metadata=meta(mesh, cid))
        replies = [r async for r in call]
        call.cancel()
    await asyncio.sleep(0.2)
    job = await finished(mesh, replies[0].request_id)
    assert common_pb2.JobState.Name(job.state) == "SUCCEEDED"
    assert job.chat_result.message.content.count("tok") == 20


async def test_a_watcher_leaving_does_not_stop_the_job(mesh: Mesh) -> None:
    cid = client()
    reply = await mesh.router.Chat(chat(max_tokens=400, async_mode=True), metadata=meta(mesh, cid))
    watch = mesh.router.WatchRequest(router_pb2.WatchRequestRequest(request_id=reply.request_id), metadata=meta(mesh, cid))
    await watch.read()
    await asyncio.sleep(0.3)
    watch.cancel()
    job = await finished(mesh, reply.request_id)
    assert common_pb2.JobState.Name(job.state) == "SUCCEEDED", job.error


async def test_a_second_caller_of_the_same_idempotency_key_leaving_does_not_stop_the_first(mesh: Mesh) -> None:
    cid, key = client(), uuid.uuid4().hex
    first = asyncio.ensure_future(mesh.router.Chat(chat(max_tokens=400, idempotency_key=key), metadata=meta(mesh, cid)))
    await asyncio.sleep(0.2)
    second = mesh.router.Chat(chat(max_tokens=400, idempotency_key=key), metadata=meta(mesh, cid))
    await asyncio.sleep(0.2)
    second.cancel()
    answer = await first
    assert answer.message.content.count("tok") == 400
    job = await finished(mesh, answer.request_id)
    assert common_pb2.JobState.Name(job.state) == "SUCCEEDED"


# OCR: the same for Ocr and StreamOcr (a scanned document of many pages keeps Tesseract busy for seconds)

OCR_PAGES = 16


def long_scan() -> bytes:
    lines = [f"Line {i} of a long scanned report about apples, pears and plums." for i in range(30)]
    return scanned_pdf([text_image(lines) for _ in range(OCR_PAGES)])


async def assert_cancelled_soon(mesh: Mesh, request_id: str, left_at: float) -> None:
    job = await finished(mesh, request_id)
    assert common_pb2.JobState.Name(job.state) == "CANCELLED", job
    assert "client went away" in job.error.message, job.error
    ended = job.timings.finished_at.ToNanoseconds() / 1e9
    assert ended - left_at < CANCEL_BUDGET + SLACK, f"the job ended {ended - left_at:.3f} s after the client left: {job}"
    assert len(job.ocr_result.pages) < OCR_PAGES


async def test_a_cancelled_stream_ocr_stops_the_job(mesh: Mesh) -> None:
    cid = client()
    request = router_pb2.StreamOcrRequest(document=long_scan(), model=OCR_MODEL)
    call = mesh.router.StreamOcr(request, metadata=meta(mesh, cid))
    first = await call.read()
    assert isinstance(first, router_pb2.StreamOcrResponse)
    await asyncio.sleep(0.5)
    call.cancel()
    left_at = time.time()
    await assert_cancelled_soon(mesh, first.request_id, left_at)


async def test_an_ocr_past_its_client_deadline_stops_the_job(mesh: Mesh) -> None:
    cid, document = client(), long_scan()
    started = time.time()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await mesh.router.Ocr(router_pb2.OcrRequest(document=document, model=OCR_MODEL), metadata=meta(mesh, cid), timeout=1.0)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    left_at = started + 1.0
    await assert_cancelled_soon(mesh, (await only_job(mesh, cid)).request_id, left_at)


# REST through the edge


def http_headers(mesh: Mesh, cid: str) -> str:
    return f"host: edge\r\nauthorization: Bearer {mesh.token('alice', client_ids=(cid,))}\r\nx-client-id: {cid}\r\n"


def http_post(path: str, headers: str, body: dict[str, Any]) -> bytes:
    data = orjson.dumps(body)
    head = f"POST {path} HTTP/1.1\r\n{headers}content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def http_request(port: int, mesh: Mesh, cid: str, path: str, body: dict[str, Any], *, keep_alive_first: bool) -> float:
    """Sends `body` to `path` on a raw connection (after a quick request on it when `keep_alive_first`),
    reads for about 0.5 s, closes the connection and returns when it closed (wall clock)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = http_headers(mesh, cid)
    if keep_alive_first:
        writer.write(f"GET /v1/models HTTP/1.1\r\n{headers}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
    writer.write(http_post(path, headers, body))
    deadline = time.monotonic() + 0.5
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        try:
            received += await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            break
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()  # the socket closes only when the loop next runs
    left_at = time.time()
    if body.get("stream"):
        assert b"tok" in received, received[:300]
    return left_at


@pytest.mark.parametrize(
    ("path", "stream", "keep_alive_first"),
    [
        ("/v1/chat/completions", True, False),
        ("/v1/chat/completions", True, True),
        ("/v1/chat/completions", False, True),
        ("/api/chat/stream", False, False),
        ("/api/chat", False, False),
    ],
)
async def test_a_rest_client_that_closes_its_connection_stops_the_job_and_the_engine_request(
    mesh: Mesh, upstream: Upstream, edge_port: int, path: str, stream: bool, keep_alive_first: bool
) -> None:
    cid = client()
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "talk"}], "max_tokens": LONG_TOKENS}
    if path.startswith("/api/"):
        body = {"model": MODEL, "messages": body["messages"], "max_tokens": LONG_TOKENS}
    if stream:
        body["stream"] = True
    left_at = await http_request(edge_port, mesh, cid, path, body, keep_alive_first=keep_alive_first)
    job = await only_job(mesh, cid)
    await assert_stopped(mesh, upstream, job.request_id, left_at)


async def test_an_async_rest_request_whose_client_leaves_still_succeeds(mesh: Mesh, edge_port: int) -> None:
    cid = client()
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_port)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "talk"}], "max_tokens": 300}
    writer.write(http_post("/v1/chat/completions", http_headers(mesh, cid) + "prefer: respond-async\r\n", body))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()
    job = await finished(mesh, (await only_job(mesh, cid)).request_id)
    assert common_pb2.JobState.Name(job.state) == "SUCCEEDED", job.error
