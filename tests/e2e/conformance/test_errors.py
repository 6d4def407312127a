"""Refusals: unknown model 404, malformed or mistyped JSON 400, unknown path 404, missing or bad credentials 401."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conformance.conftest import Gateway, bearer
from tests.e2e.conformance.contract import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAUTHENTICATED,
    assert_edge_error,
    assert_error,
    ok_json,
    png_with_text,
)

UNKNOWN = "conformance-no-such-model"
MESSAGES = [{"role": "user", "content": "Hi"}]


def test_an_unknown_chat_model_is_404(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/api/chat", json={"model": UNKNOWN, "messages": MESSAGES}, headers=gateway.admin)
    assert_error(reply, 404, NOT_FOUND, UNKNOWN)


def test_an_unknown_openai_model_is_404(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/v1/chat/completions", json={"model": UNKNOWN, "messages": MESSAGES}, headers=gateway.admin)
    assert_error(reply, 404, NOT_FOUND, UNKNOWN)


def test_an_unknown_ocr_model_is_404(http: httpx.Client, gateway: Gateway) -> None:
    headers = {**gateway.admin, "content-type": "image/png"}
    reply = http.post("/api/ocr", params={"model": UNKNOWN}, content=png_with_text("Hi"), headers=headers)
    assert_error(reply, 404, NOT_FOUND, UNKNOWN)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream", "/auth/token"])
def test_malformed_json_is_400(http: httpx.Client, gateway: Gateway, path: str) -> None:
    headers = {**gateway.admin, "content-type": "application/json"}
    assert_edge_error(http.post(path, content=b'{"model": ', headers=headers), 400, INVALID_ARGUMENT, gateway.local)


def test_malformed_json_to_the_openai_path_is_400(http: httpx.Client, gateway: Gateway) -> None:
    headers = {**gateway.admin, "content-type": "application/json"}
    assert_error(http.post("/v1/chat/completions", content=b'{"model": ', headers=headers), 400, INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": MESSAGES, "max_tokens": "many"},
        {"model": "m", "messages": "hello"},
        {"model": "m", "messages": MESSAGES, "no_such_field": 1},
    ],
    ids=["wrong-type", "string-for-list", "unknown-field"],
)
def test_a_mistyped_body_is_400(http: httpx.Client, gateway: Gateway, body: dict[str, object]) -> None:
    body = {**body, "model": gateway.chat_model}
    assert_edge_error(http.post("/api/chat", json=body, headers=gateway.admin), 400, INVALID_ARGUMENT, gateway.local)


def test_an_out_of_range_field_is_400(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post(
        "/api/chat", json={"model": gateway.chat_model, "messages": MESSAGES, "max_tokens": 0}, headers=gateway.admin
    )
    assert_error(reply, 400, INVALID_ARGUMENT, "max_tokens")


@pytest.mark.parametrize("path", ["/no/such/path", "/api/chatty", "/admin/models/x/y/z"])
def test_an_unknown_path_is_404(http: httpx.Client, gateway: Gateway, path: str) -> None:
    assert_edge_error(http.get(path, headers=gateway.admin), 404, NOT_FOUND, gateway.local)


@pytest.mark.parametrize("credential", [None, "not-a-token", "aigw_0123456789abcdef_not-a-real-secret"])
def test_chat_without_a_valid_credential_is_401(http: httpx.Client, gateway: Gateway, credential: str | None) -> None:
    headers = bearer(credential) if credential else {}
    reply = http.post("/api/chat", json={"model": gateway.chat_model, "messages": MESSAGES}, headers=headers)
    assert_error(reply, 401, UNAUTHENTICATED)


def test_refused_requests_store_nothing(http: httpx.Client, gateway: Gateway, client_id: str) -> None:
    headers = {**gateway.admin, "x-client-id": client_id}
    bodies = [
        {"model": UNKNOWN, "messages": MESSAGES},
        {"model": gateway.chat_model, "messages": MESSAGES, "max_tokens": 0},
        {"model": gateway.chat_model, "messages": []},
    ]
    for body in bodies:
        assert http.post("/api/chat", json=body, headers=headers).status_code in {400, 404}
    assert http.post("/api/chat", json=bodies[1], headers={**headers, "x-priority": "urgent"}).status_code == 400
    history = ok_json(http.get("/admin/requests", params={"client_id": client_id}, headers=gateway.admin))
    assert history["requests"] == []
