"""GET /health and GET /livez with no credential; POST /auth/token (form, JSON, password, refresh grant); POST /auth/revoke."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conformance.conftest import Gateway, User
from tests.e2e.conformance.contract import UNAUTHENTICATED, as_int, assert_error, ok_json


def assert_token_answer(body: dict[str, Any], role: str) -> None:
    assert body["access_token"].count(".") == 2, "the access token is a JWT"
    assert body["token_type"].lower() == "bearer"
    assert as_int(body["expires_in"]) > 0
    assert body["refresh_token"]
    assert as_int(body["refresh_expires_in"]) > as_int(body["expires_in"])
    assert body["role"] == role


def test_health_needs_no_credential(http: httpx.Client) -> None:
    body = ok_json(http.get("/health"))
    assert body["status"] == "ok"
    assert isinstance(body["components"], dict)
    assert body["components"]
    assert set(body["components"].values()) <= {"serving", "stopped", "sleeping"}
    assert isinstance(body["version"], str)


def test_liveness_needs_no_credential(http: httpx.Client) -> None:
    reply = http.get("/livez")
    assert (reply.status_code, reply.json()) == (200, {"status": "live"})


def test_the_clients_request_id_comes_back(http: httpx.Client) -> None:
    reply = http.get("/health", headers={"x-request-id": "conformance-trace-0001"})
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "conformance-trace-0001"


def test_form_login(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/auth/token", data={"username": gateway.admin_username, "password": gateway.admin_password})
    assert reply.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_token_answer(ok_json(reply), "admin")


def test_json_login(http: httpx.Client, user: User) -> None:
    body = ok_json(http.post("/auth/token", json={"username": user.username, "password": user.password}))
    assert_token_answer(body, "user")
    assert http.get("/v1/models", headers={"authorization": f"Bearer {body['access_token']}"}).status_code == 200


def test_refresh_grant_rotates_and_a_used_refresh_token_is_refused(http: httpx.Client, user: User) -> None:
    first = ok_json(http.post("/auth/token", data={"username": user.username, "password": user.password}))
    second = ok_json(http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}))
    assert_token_answer(second, "user")
    assert second["refresh_token"] != first["refresh_token"]
    third = ok_json(http.post("/auth/token", json={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}))
    assert_token_answer(third, "user")
    reused = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert_error(reused, 401, UNAUTHENTICATED)


def test_logout_revokes_the_refresh_token(http: httpx.Client, user: User) -> None:
    session = ok_json(http.post("/auth/token", data={"username": user.username, "password": user.password}))
    revoked = ok_json(http.post("/auth/revoke", json={"refresh_token": session["refresh_token"]}))
    assert as_int(revoked["revoked"]) >= 1
    refused = http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": session["refresh_token"]})
    assert_error(refused, 401, UNAUTHENTICATED)


def test_a_wrong_password_is_401(http: httpx.Client, user: User) -> None:
    reply = http.post("/auth/token", data={"username": user.username, "password": "not-the-password-at-all"})
    assert_error(reply, 401, UNAUTHENTICATED, "invalid user name or password")
