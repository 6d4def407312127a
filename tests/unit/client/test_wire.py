"""The blocking SDK on a grpc_testing channel: what it puts on the wire (request fields, credentials, client id,
priority) and how it reads answers and error statuses, with no server and no socket."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from aigw_client import AigwClient, InvalidRequest, RateLimited

ROUTER = "gateway.test:50051"
SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterService"]


class Call:
    """One SDK call run in a thread while the test answers it from the channel's side."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def result(self) -> Any:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the SDK call did not return"
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def wire() -> Iterator[tuple[AigwClient, Any]]:
    channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    client = AigwClient(ROUTER, api_key="aigw_k1.secret", client_id="billing", priority="low", channels={ROUTER: channel})
    yield client, channel
    client.close()


def failure(code: grpc.StatusCode, message: str, *details: Any) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def test_chat_puts_the_prompt_and_credentials_on_the_wire_and_reads_the_answer(wire: tuple[AigwClient, Any]) -> None:
    client, channel = wire
    call = Call(lambda: client.chat("Hello", model="tiny-chat", max_tokens=8, priority="high", timeout=12))
    metadata, request, rpc = channel.take_unary_unary(SERVICE.methods_by_name["Chat"])
    answer = router_pb2.ChatResponse(
        request_id="req-1",
        status=common_pb2.SUCCEEDED,
        model="tiny-chat",
        response="Hi there",
        finish_reason="stop",
        usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    )
    rpc.terminate(answer, (), grpc.StatusCode.OK, "")
    result = call.result()

    assert (request.model, request.max_tokens, [(m.role, m.content) for m in request.messages]) == (
        "tiny-chat",
        8,
        [("user", "Hello")],
    )
    sent = dict(metadata)
    assert sent["authorization"] == "Bearer aigw_k1.secret"
    assert sent["x-client-id"] == "billing"
    assert sent["x-priority"] == "high", "the call's priority wins over the client's default"
    assert (result.request_id, result.status, result.text, result.finish_reason) == ("req-1", "SUCCEEDED", "Hi there", "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 2)
    assert request.priority == "high"


def test_a_full_queue_is_rate_limited_with_the_servers_retry_delay(wire: tuple[AigwClient, Any]) -> None:
    client, channel = wire
    call = Call(lambda: client.chat("Hello", model="tiny-chat"))
    metadata, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name["Chat"])
    status = failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the queue of model 'tiny-chat' is full; try again later",
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7)),
    )
    rpc.terminate(None, status.trailing_metadata, status.code, status.details)

    with pytest.raises(RateLimited) as err:
        call.result()
    assert err.value.retry_after == 7
    assert "queue of model 'tiny-chat' is full" in str(err.value)
    assert dict(metadata)["x-priority"] == "low", "the client's default priority"


def test_a_refused_field_comes_back_named(wire: tuple[AigwClient, Any]) -> None:
    client, channel = wire
    call = Call(lambda: client.chat("Hello", model="no-such-model"))
    _, request, rpc = channel.take_unary_unary(SERVICE.methods_by_name["Chat"])
    violation = error_details_pb2.BadRequest.FieldViolation(field="model", description="no model 'no-such-model'")
    status = failure(
        grpc.StatusCode.INVALID_ARGUMENT, "no model 'no-such-model'", error_details_pb2.BadRequest(field_violations=[violation])
    )
    rpc.terminate(None, status.trailing_metadata, status.code, status.details)

    with pytest.raises(InvalidRequest) as err:
        call.result()
    assert request.model == "no-such-model"
    assert (err.value.code, err.value.field_violations) == ("INVALID_ARGUMENT", (("model", "no model 'no-such-model'"),))
