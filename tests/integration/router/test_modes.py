"""Through real servers: streaming (native and OpenAI SSE), async submit/poll/watch, cancellation, disconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import cast

import grpc
import orjson
import pytest
import pytest_asyncio
from google.api import httpbody_pb2
from google.rpc import code_pb2, status_pb2
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import (
    MODEL,
    Mesh,
    Upstream,
    bearer,
    mesh_on,
    textgen_backend,
    upstreams,
    wait_until,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
TOKEN_DELAY_MS = 40
MAX_TOKENS_LIMIT = 1000
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    options: tuple[str, ...] = ("--answer", " ".join(WORDS), "--tokens", "500", "--chunk-delay-ms", str(TOKEN_DELAY_MS))
    options += ("--max-tokens-limit", str(MAX_TOKENS_LIMIT))
    with upstreams(options) as (up,):
        yield up


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(ferretdb: FerretDBProcess, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with mesh_on(ferretdb, tmp_path_factory.mktemp("router-modes"), [textgen_backend("tg-0", upstream)]) as running:
        yield running


def expected(tokens: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def trailers_of(error: grpc.aio.AioRpcError) -> dict[str, str | bytes]:
    """The trailing metadata a failed call ended with."""
    # grpc-stubs type them as grpc.Call's metadatum objects; grpc.aio returns (key, value) pairs.
    return dict(cast("grpc.aio.Metadata", error.trailing_metadata()))


def messages() -> list[common_pb2.ChatMessage]:
    return [common_pb2.ChatMessage(role="user", content="count for me")]


async def job_of(mesh: Mesh, request_id: str) -> common_pb2.Job:
    reply = await mesh.router.GetRequest(router_pb2.GetRequestRequest(request_id=request_id), metadata=bearer(mesh.token()))
    job: common_pb2.Job = reply.request
    return job


async def test_stream_chat_delivers_tokens_as_the_backend_produces_them(mesh: Mesh) -> None:
    call = mesh.router.StreamChat(
        router_pb2.StreamChatRequest(model=MODEL, messages=messages(), max_tokens=12), metadata=bearer(mesh.token())
    )
    events: list[tuple[float, router_pb2.StreamChatResponse]] = [(time.monotonic(), e) async for e in call]
    header = dict(await call.initial_metadata())
    first, deltas, last = events[0][1], [(t, e) for t, e in events if e.delta], events[-1]
    assert first.status == common_pb2.RUNNING or first.status == common_pb2.QUEUED
    assert {e.request_id for _, e in events} == {header["x-request-id"]}
    assert len(deltas) >= 5
    assert "".join(e.delta for _, e in deltas) == expected(12)
    assert last[0] - deltas[0][0] >= 5 * TOKEN_DELAY_MS / 1000, "tokens arrived all at once, not as produced"
    assert last[1].status == common_pb2.SUCCEEDED
    assert last[1].finish_reason == "length"
    assert last[1].usage.completion_tokens == 12


async def test_a_unary_chat_answers_its_request_id_in_trailing_metadata(mesh: Mesh) -> None:
    call = mesh.router.Chat(router_pb2.ChatRequest(model=MODEL, messages=messages(), max_tokens=2), metadata=bearer(mesh.token()))
    reply = await call
    assert reply.status == common_pb2.SUCCEEDED
    assert dict(await call.trailing_metadata())["x-request-id"] == reply.request_id
    assert "x-request-id" not in dict(await call.initial_metadata())


async def test_a_refused_unary_chat_carries_the_callers_request_id_beside_its_status_details(mesh: Mesh) -> None:
    request = router_pb2.ChatRequest(model=MODEL, messages=messages(), priority="urgent")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.router.Chat(request, metadata=bearer(mesh.token(), x_request_id="modes-caller-7"))
    trailing = trailers_of(refused.value)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailing["x-request-id"] == "modes-caller-7"
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    assert (status.code, status.message) == (code_pb2.INVALID_ARGUMENT, refused.value.details())


async def test_a_unary_chat_that_ends_in_error_after_admission_names_its_stored_request(mesh: Mesh) -> None:
    request = router_pb2.ChatRequest(model=MODEL, messages=messages(), max_tokens=MAX_TOKENS_LIMIT + 1)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await mesh.router.Chat(request, metadata=bearer(mesh.token(), x_request_id="modes-caller-8"))
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ended.value.details()
    trailing = trailers_of(ended.value)
    assert "grpc-status-details-bin" in trailing
    request_id = str(trailing["x-request-id"])
    assert request_id != "modes-caller-8", "once admitted, the id is the router's, the one the request is stored under"
    job = await job_of(mesh, request_id)
    assert (job.state, job.error.code) == (common_pb2.FAILED, "INVALID_ARGUMENT")


async def test_openai_stream_is_sse_ending_in_done(mesh: Mesh) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "count"}], "max_tokens": 8, "stream": True}
    body["stream_options"] = {"include_usage": True}
    call = mesh.router.CreateChatCompletion(
        httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body)), metadata=bearer(mesh.token())
    )
    parts = [p async for p in call]
    request_id = str(dict(await call.initial_metadata())["x-request-id"])
    assert {p.content_type for p in parts} == {"text/event-stream"}
    assert parts[-1].data == b"data: [DONE]\n\n"
    chunks = [ChatCompletionChunk.model_validate_json(p.data.removeprefix(b"data: ")) for p in parts[:-1]]
    assert {c.id for c in chunks} == {f"chatcmpl-{request_id}"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 5
    assert "".join(pieces) == expected(8)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


async def test_openai_unary_answer_and_request_id_header(mesh: Mesh) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "count"}]}],
        "max_completion_tokens": 3,
    }
    call = mesh.router.CreateChatCompletion(
        httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body)), metadata=bearer(mesh.token())
    )
    parts = [p async for p in call]
    request_id = str(dict(await call.trailing_metadata())["x-request-id"])  # one JSON body: the id comes with its end
    assert "x-request-id" not in dict(await call.initial_metadata())
    assert len(parts) == 1
    assert parts[0].content_type == "application/json"
    answer = ChatCompletion.model_validate_json(parts[0].data)
    assert answer.id == f"chatcmpl-{request_id}"
    assert answer.model == MODEL
    assert answer.choices[0].message.content == expected(3)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    assert (await job_of(mesh, request_id)).state == common_pb2.SUCCEEDED


async def test_async_submit_then_poll_and_watch_until_the_result(mesh: Mesh) -> None:
    reply = await mesh.router.Chat(
        router_pb2.ChatRequest(model=MODEL, messages=messages(), max_tokens=6, async_mode=True), metadata=bearer(mesh.token())
    )
    assert reply.status == common_pb2.QUEUED
    assert reply.request_id
    assert reply.response == ""
    watched = [
        e
        async for e in mesh.router.WatchRequest(
            router_pb2.WatchRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token())
        )
    ]
    assert watched[-1].event == "finished"
    assert watched[-1].request.state == common_pb2.SUCCEEDED
    job = await job_of(mesh, reply.request_id)
    assert job.state == common_pb2.SUCCEEDED
    assert job.chat_result.message.content == expected(6)
    assert job.backend == "tg-0"


async def test_prefer_respond_async_answers_at_once(mesh: Mesh) -> None:
    request = router_pb2.ChatRequest(model=MODEL, messages=messages(), max_tokens=200)
    begin = time.monotonic()
    reply = await mesh.router.Chat(request, metadata=bearer(mesh.token(), prefer="respond-async"))
    assert time.monotonic() - begin < 200 * TOKEN_DELAY_MS / 1000 / 2
    assert reply.status in (common_pb2.QUEUED, common_pb2.RUNNING)
    await mesh.router.CancelRequest(router_pb2.CancelRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token()))


async def test_cancel_mid_run_stops_the_backend_call(mesh: Mesh, upstream: Upstream) -> None:
    before = upstream.stats()["cancelled"]
    reply = await mesh.router.Chat(
        router_pb2.ChatRequest(model=MODEL, messages=messages(), max_tokens=400, async_mode=True), metadata=bearer(mesh.token())
    )
    progress: list[int] = []

    async def running() -> None:
        while True:
            job = await job_of(mesh, reply.request_id)
            if job.state == common_pb2.RUNNING and job.progress > 0:
                progress.append(int(job.progress))
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(running(), 10)
    cancelled = await mesh.router.CancelRequest(
        router_pb2.CancelRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token())
    )
    assert cancelled.request.request_id == reply.request_id
    await wait_until(lambda: upstream.stats()["cancelled"] == before + 1, timeout=5, what="upstream call cancelled")
    job = await job_of(mesh, reply.request_id)
    deadline = time.monotonic() + 5
    while job.state != common_pb2.CANCELLED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        job = await job_of(mesh, reply.request_id)
    assert job.state == common_pb2.CANCELLED
    assert upstream.stats()["in_flight"] == 0


async def test_a_client_that_disconnects_cancels_its_job(mesh: Mesh, upstream: Upstream) -> None:
    call = mesh.router.StreamChat(
        router_pb2.StreamChatRequest(model=MODEL, messages=messages(), max_tokens=25), metadata=bearer(mesh.token())
    )
    request_id = ""
    async for event in call:
        request_id = event.request_id
        if event.delta:
            break
    call.cancel()
    deadline = time.monotonic() + 5
    job = await job_of(mesh, request_id)
    while job.state == common_pb2.RUNNING and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        job = await job_of(mesh, request_id)
    assert job.state == common_pb2.CANCELLED
    assert job.error.message == "the request was cancelled: the client went away"
    assert len(job.chat_result.message.content.split()) < 25
    await wait_until(lambda: upstream.stats()["in_flight"] == 0, timeout=2, what="the upstream call closed")


async def test_a_cancelled_sync_request_answers_cancelled(mesh: Mesh) -> None:
    call = mesh.router.StreamChat(
        router_pb2.StreamChatRequest(model=MODEL, messages=messages(), max_tokens=300), metadata=bearer(mesh.token())
    )
    cancelled = False
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for event in call:
            if event.delta and not cancelled:
                cancel = router_pb2.CancelRequestRequest(request_id=event.request_id)
                await mesh.router.CancelRequest(cancel, metadata=bearer(mesh.token()))
                cancelled = True
    assert ended.value.code() == grpc.StatusCode.CANCELLED
