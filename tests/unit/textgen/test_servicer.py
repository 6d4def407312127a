"""TextgenService and BackendService of textgen, in process: proto ⇄ backend mapping, status codes, metadata.

The servicers run behind the servers' interceptor on an in-process context (tests/unit/servicer_calls.py),
over a backend attached to the vLLM stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import orjson
import pytest
from google.rpc import status_pb2

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.textgen.servicer import TextgenLifecycleServicer, TextgenServicer
from tests.unit.servicer_calls import InProcessContext, InProcessService
from tests.unit.textgen.standin import VllmStandIn, chat, make_backend

TEXTGEN = textgen_pb2.DESCRIPTOR.services_by_name["TextgenService"]
LIFECYCLE = backend_pb2.DESCRIPTOR.services_by_name["BackendService"]


class Served:
    """A started backend behind both servicers, and the stand-in it is attached to."""

    def __init__(self, standin: VllmStandIn) -> None:
        self.standin = standin
        self.backend = make_backend(standin)
        self.textgen = InProcessService(TEXTGEN, TextgenServicer(self.backend), "textgen")
        self.lifecycle = InProcessService(LIFECYCLE, TextgenLifecycleServicer(self.backend), "textgen")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    served = Served(VllmStandIn())
    await served.backend.start(lambda serving: asyncio.sleep(0))
    yield served
    await served.backend.stop()


def status_of(context: InProcessContext) -> status_pb2.Status:
    """The google.rpc.Status the call's trailers carry."""
    (details,) = [v for k, v in context.trailing_metadata_sent if k == "grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return status_pb2.Status.FromString(details)


async def test_generate_maps_the_request_to_the_engine_and_its_answer_back(served: Served) -> None:
    request = textgen_pb2.GenerateRequest(model="llama", chat=chat(), priority=common_pb2.PRIORITY_HIGH, request_id="req-1")

    reply = await served.textgen.unary("Generate", request, InProcessContext())

    assert isinstance(reply, textgen_pb2.GenerateResponse)
    assert (reply.result.model, reply.result.message.content, reply.result.finish_reason) == ("llama", "ok", "stop")
    assert reply.result.usage.completion_tokens == 1
    (sent,) = served.standin.chats
    body = orjson.loads(sent.content)
    assert (body["model"], body["priority"], body["messages"]) == (
        "meta-llama/Llama-3-8B-Instruct",
        -1,
        [{"role": "user", "content": "Hi"}],
    )
    assert sent.headers["x-request-id"] == "req-1"


async def test_without_a_request_id_the_callers_metadata_names_the_engine_request(served: Served) -> None:
    request = textgen_pb2.GenerateRequest(model="llama", chat=chat())

    await served.textgen.unary("Generate", request, InProcessContext([("x-request-id", "from-metadata")]))

    assert served.standin.chats[0].headers["x-request-id"] == "from-metadata"


async def test_stream_generate_sends_each_delta_then_the_finish_and_usage(served: Served) -> None:
    request = textgen_pb2.StreamGenerateRequest(model="llama", chat=chat(), request_id="req-2")

    replies = await served.textgen.stream("StreamGenerate", request, InProcessContext())

    parts = [(r.delta, r.finish_reason, r.model) for r in replies if isinstance(r, textgen_pb2.StreamGenerateResponse)]
    assert parts == [("o", "", "llama"), ("k", "", "llama"), ("", "stop", "llama")]
    last = replies[-1]
    assert isinstance(last, textgen_pb2.StreamGenerateResponse)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 2, 5)
    assert orjson.loads(served.standin.chats[0].content)["stream"] is True


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("gpt-9", grpc.StatusCode.NOT_FOUND, "gpt-9"),
        ("qwen", grpc.StatusCode.UNAVAILABLE, "not served by backend gpu-0"),
    ],
)
async def test_generate_refusals_carry_their_status_code_and_details(
    served: Served, model: str, code: grpc.StatusCode, message: str
) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.textgen.unary("Generate", textgen_pb2.GenerateRequest(model=model, chat=chat()), context)

    assert context.code() is code
    assert message in context.details()
    status = status_of(context)
    assert (status.code, status.message) == (code.value[0], context.details())
    assert served.standin.chats == [], "nothing reached the engine"


async def test_a_stream_refused_before_its_first_message_ends_with_the_status(served: Served) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.textgen.stream("StreamGenerate", textgen_pb2.StreamGenerateRequest(model="gpt-9", chat=chat()), context)

    assert context.code() is grpc.StatusCode.NOT_FOUND


async def test_a_request_that_is_not_protobuf_is_invalid_argument(served: Served) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.textgen.unary("Generate", b"\xff\xff\xff", context)

    assert context.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_get_status_maps_the_backends_snapshot(served: Served) -> None:
    async def metrics_read() -> None:
        while served.backend.snapshot().server_waiting < 0:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(metrics_read(), 2)

    reply = await served.lifecycle.unary("GetStatus", backend_pb2.GetStatusRequest(), InProcessContext())

    assert isinstance(reply, backend_pb2.GetStatusResponse)
    status = reply.status
    assert (status.backend, status.engine, status.state) == ("gpu-0", "vllm", common_pb2.BACKEND_STATE_READY)
    assert (list(status.loaded_models), status.capacity, status.in_flight) == (["llama"], 32, 0)
    assert (status.server_running, status.server_waiting, status.kv_cache_usage) == (2, 5, 0.5)
    assert status.updated_at.seconds > 0


async def test_sleep_and_wake_answer_the_outcome_and_the_new_state(served: Served) -> None:
    asleep = await served.lifecycle.unary("SleepModel", backend_pb2.SleepModelRequest(level=1), InProcessContext())
    awake = await served.lifecycle.unary("WakeModel", backend_pb2.WakeModelRequest(), InProcessContext())

    assert isinstance(asleep, backend_pb2.SleepModelResponse)
    assert (asleep.outcome, asleep.status.state) == ("asleep at level 1: llama", common_pb2.BACKEND_STATE_SLEEPING)
    assert asleep.elapsed_ms >= 0
    assert isinstance(awake, backend_pb2.WakeModelResponse)
    assert (awake.outcome, awake.status.state) == ("woken: llama", common_pb2.BACKEND_STATE_READY)


@pytest.mark.parametrize(
    ("rpc", "request_message", "code"),
    [
        ("LoadModel", backend_pb2.LoadModelRequest(model="gpt-9"), grpc.StatusCode.NOT_FOUND),
        ("LoadModel", backend_pb2.LoadModelRequest(model="qwen"), grpc.StatusCode.FAILED_PRECONDITION),
        ("SwitchModel", backend_pb2.SwitchModelRequest(model="llama"), grpc.StatusCode.FAILED_PRECONDITION),
        ("SleepModel", backend_pb2.SleepModelRequest(level=3), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_lifecycle_refusals_carry_their_status_code(
    served: Served, rpc: str, request_message: backend_pb2.LoadModelRequest, code: grpc.StatusCode
) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.lifecycle.unary(rpc, request_message, context)

    assert context.code() is code
    assert status_of(context).code == code.value[0]


async def test_get_engines_names_where_each_engine_listens_and_what_it_serves(served: Served) -> None:
    reply = await served.lifecycle.unary("GetEngines", backend_pb2.GetEnginesRequest(), InProcessContext())

    assert isinstance(reply, backend_pb2.GetEnginesResponse)
    (engine,) = reply.engines
    assert (engine.base_url, engine.engine, engine.capacity, engine.priority_scheduling) == (
        served.standin.url,
        "vllm",
        32,
        True,
    )
    assert [(m.model, m.served_name) for m in engine.models] == [("llama", "meta-llama/Llama-3-8B-Instruct")]
