"""POST /api/chat (sync, async, headers), /api/chat/stream, and GET|DELETE /v1/requests/{id} and its :watch stream."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conformance.conftest import Gateway, User
from tests.e2e.conformance.contract import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    STATES,
    WATCH_EVENTS,
    as_int,
    assert_error,
    assert_snake_case,
    field_violations,
    job_of,
    ok_json,
    read_sse,
    wait_finished,
)

MAX_TOKENS = 8


def chat_body(gateway: Gateway, **extra: Any) -> dict[str, Any]:
    return {
        "model": gateway.chat_model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": MAX_TOKENS,
        **extra,
    }


def assert_usage(usage: dict[str, Any]) -> None:
    prompt, completion = as_int(usage["prompt_tokens"]), as_int(usage["completion_tokens"])
    assert prompt > 0
    assert 1 <= completion <= MAX_TOKENS
    assert as_int(usage["total_tokens"]) == prompt + completion


def submit_async(http: httpx.Client, gateway: Gateway, headers: dict[str, str], body: dict[str, Any]) -> str:
    """Submits a chat that answers at once; returns its request id."""
    answer = ok_json(http.post("/api/chat", json=body, headers={**gateway.admin, **headers}))
    assert answer["status"] in {"QUEUED", "RUNNING"}, answer
    request_id: str = answer["request_id"]
    assert request_id
    return request_id


def test_sync_chat_answers_text_usage_and_request_id(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/api/chat", json=chat_body(gateway), headers=gateway.admin)
    body = ok_json(reply)
    if gateway.local:  # Envoy answers its own request id in the header (docs/edge.md); the body's is the stored one
        assert reply.headers["x-request-id"] == body["request_id"]
    assert body["status"] == "SUCCEEDED"
    assert body["model"] == gateway.chat_model
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"] == body["response"]
    assert body["response"]
    assert body["finish_reason"] in {"stop", "length"}
    assert_usage(body["usage"])
    stored = job_of(http, gateway.admin, body["request_id"])
    assert stored["state"] == "SUCCEEDED"
    assert stored["chat_result"]["message"]["content"] == body["response"]


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_client_id_and_priority_headers_are_recorded(http: httpx.Client, gateway: Gateway, client_id: str, priority: str) -> None:
    headers = {**gateway.admin, "x-client-id": client_id, "x-priority": priority}
    body = ok_json(http.post("/api/chat", json=chat_body(gateway), headers=headers))
    job = job_of(http, gateway.admin, body["request_id"])
    assert job["client_id"] == client_id
    assert job["priority"] == f"PRIORITY_{priority.upper()}"


def test_an_invalid_priority_is_400_naming_the_field(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/api/chat", json=chat_body(gateway), headers={**gateway.admin, "x-priority": "urgent"})
    status = assert_error(reply, 400, INVALID_ARGUMENT, "priority")
    assert "priority" in field_violations(status)


def test_async_chat_answers_at_once_and_is_polled_to_its_result(http: httpx.Client, gateway: Gateway) -> None:
    request_id = submit_async(http, gateway, {}, chat_body(gateway, **{"async": True}))
    job = wait_finished(http, gateway.admin, request_id)
    assert job["state"] == "SUCCEEDED", job
    assert job["model"] == gateway.chat_model
    assert job["kind"] == "JOB_KIND_CHAT"
    assert job["chat_result"]["message"]["content"]
    assert_usage(job["chat_result"]["usage"])


def test_prefer_respond_async_then_watch_until_finished(http: httpx.Client, gateway: Gateway) -> None:
    request_id = submit_async(http, gateway, {"prefer": "respond-async"}, chat_body(gateway))
    with http.stream("GET", f"/v1/requests/{request_id}:watch", headers=gateway.admin) as reply:
        events = [e.json() for e in read_sse(reply)]
    assert events
    for event in events:
        assert_snake_case(event)
        assert event["event"] in WATCH_EVENTS
        assert event["request"]["request_id"] == request_id
        assert event["request"]["state"] in STATES
    assert [e["event"] for e in events].count("finished") == 1
    assert events[-1]["event"] == "finished"
    assert events[-1]["request"]["state"] == "SUCCEEDED"
    assert events[-1]["request"]["chat_result"]["message"]["content"]


def test_cancelling_a_finished_request_returns_it_as_it_is(http: httpx.Client, gateway: Gateway) -> None:
    request_id = ok_json(http.post("/api/chat", json=chat_body(gateway), headers=gateway.admin))["request_id"]
    cancelled = ok_json(http.delete(f"/v1/requests/{request_id}", headers=gateway.admin))["request"]
    assert cancelled["request_id"] == request_id
    assert cancelled["state"] == "SUCCEEDED"
    assert job_of(http, gateway.admin, request_id)["state"] == "SUCCEEDED"


def test_an_unknown_request_id_is_404_for_get_cancel_and_watch(http: httpx.Client, gateway: Gateway) -> None:
    path = f"/v1/requests/{uuid.uuid4().hex}"
    assert_error(http.get(path, headers=gateway.admin), 404, NOT_FOUND)
    assert_error(http.delete(path, headers=gateway.admin), 404, NOT_FOUND)
    with http.stream("GET", f"{path}:watch", headers=gateway.admin) as reply:
        reply.read()
    assert_error(reply, 404, NOT_FOUND)


def test_someone_elses_request_is_404(http: httpx.Client, gateway: Gateway, user: User) -> None:
    request_id = ok_json(http.post("/api/chat", json=chat_body(gateway), headers=gateway.admin))["request_id"]
    assert_error(http.get(f"/v1/requests/{request_id}", headers=user.headers), 404, NOT_FOUND)


def test_stream_chat_sends_json_events_as_the_text_grows(http: httpx.Client, gateway: Gateway) -> None:
    with http.stream("POST", "/api/chat/stream", json=chat_body(gateway), headers=gateway.admin) as reply:
        events = [e.json() for e in read_sse(reply)]
    assert len(events) >= 3, events
    request_id = events[0]["request_id"]
    assert request_id
    for event in events:
        assert_snake_case(event)
        assert event["request_id"] == request_id
        assert event["status"] in STATES
    *before, last = events
    assert before[0]["status"] in {"QUEUED", "RUNNING"}
    assert sum(1 for e in before if e.get("delta")) >= 2, "the text did not arrive in several events"
    assert not any(e.get("finish_reason") for e in before)
    assert last["status"] == "SUCCEEDED"
    assert last["finish_reason"] in {"stop", "length"}
    assert_usage(last["usage"])
    text = "".join(e.get("delta", "") for e in events)
    assert job_of(http, gateway.admin, request_id)["chat_result"]["message"]["content"] == text
