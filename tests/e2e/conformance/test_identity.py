"""Users (/admin/users) and API keys (/admin/api-keys); who may call what: 401 without a credential, 403 for users."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conformance.conftest import Gateway, User, bearer, login
from tests.e2e.conformance.contract import (
    ALREADY_EXISTS,
    INVALID_ARGUMENT,
    NOT_FOUND,
    PERMISSION_DENIED,
    UNAUTHENTICATED,
    assert_error,
    ok_json,
    wait_for,
)

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
ADMIN_CALLS = [
    ("GET", "/admin/models"),
    ("GET", "/admin/users"),
    ("GET", "/admin/requests"),
    ("GET", "/admin/crashes"),
    ("GET", "/admin/autoswitch"),
]


@pytest.fixture
def username(gateway: Gateway) -> Iterator[str]:
    """A user name for this test; the user is deleted afterwards if the test left it."""
    name = f"conf-crud-{uuid.uuid4().hex[:8]}"
    yield name
    with gateway.client() as client:
        client.delete(f"/admin/users/{name}", headers=gateway.admin)


def test_users_are_created_listed_updated_and_deleted(http: httpx.Client, gateway: Gateway, username: str) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    made = ok_json(http.post("/admin/users", json={"username": username, "password": password}, headers=gateway.admin))["user"]
    assert made["username"] == username
    assert made["role"] == "user"
    assert made["disabled"] is False
    assert made["created_at"]
    again = http.post("/admin/users", json={"username": username, "password": password}, headers=gateway.admin)
    assert_error(again, 409, ALREADY_EXISTS)
    listed = ok_json(http.get("/admin/users", headers=gateway.admin))["users"]
    assert username in {u["username"] for u in listed}
    assert "password" not in http.get("/admin/users", headers=gateway.admin).text

    disabled = ok_json(http.patch(f"/admin/users/{username}", json={"disabled": True}, headers=gateway.admin))["user"]
    assert disabled["disabled"] is True
    refused = http.post("/auth/token", data={"username": username, "password": password})
    assert_error(refused, 401, UNAUTHENTICATED)
    new_password = f"pw-{uuid.uuid4().hex}"
    enabled = http.patch(f"/admin/users/{username}", json={"disabled": False, "password": new_password}, headers=gateway.admin)
    assert ok_json(enabled)["user"]["disabled"] is False
    assert login(http, username, new_password)["role"] == "user"

    assert ok_json(http.delete(f"/admin/users/{username}", headers=gateway.admin)) == {}
    assert username not in {u["username"] for u in ok_json(http.get("/admin/users", headers=gateway.admin))["users"]}
    assert_error(http.delete(f"/admin/users/{username}", headers=gateway.admin), 404, NOT_FOUND)


def test_a_short_password_is_400_and_creates_nobody(http: httpx.Client, gateway: Gateway, username: str) -> None:
    reply = http.post("/admin/users", json={"username": username, "password": "short"}, headers=gateway.admin)
    assert_error(reply, 400, INVALID_ARGUMENT, "password")
    assert username not in {u["username"] for u in ok_json(http.get("/admin/users", headers=gateway.admin))["users"]}


def test_an_api_key_is_shown_once_works_and_stops_working_when_revoked(http: httpx.Client, gateway: Gateway) -> None:
    made = ok_json(http.post("/admin/api-keys", json={"name": "conformance", "role": "user"}, headers=gateway.admin))
    key_id, secret = made["key"]["key_id"], made["api_key"]
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    assert secret.startswith(f"aigw_{key_id}_")
    assert made["key"]["role"] == "user"
    listing = http.get("/admin/api-keys", headers=gateway.admin)
    assert key_id in {k["key_id"] for k in ok_json(listing)["keys"]}
    assert secret.removeprefix(f"aigw_{key_id}_") not in listing.text, "the secret is shown again"

    answer = ok_json(http.post("/api/chat", json={"model": gateway.chat_model, **CHAT}, headers=bearer(secret)))
    assert answer["status"] == "SUCCEEDED"

    revoked = ok_json(http.delete(f"/admin/api-keys/{key_id}", headers=gateway.admin))["key"]
    assert revoked["key_id"] == key_id
    assert revoked["revoked_at"]
    wait_for(
        lambda: True if http.get("/v1/models", headers=bearer(secret)).status_code == 401 else None, 10, "the key to be refused"
    )
    refused = http.post("/api/chat", json={"model": gateway.chat_model, **CHAT}, headers=bearer(secret))
    assert_error(refused, 401, UNAUTHENTICATED)


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_a_user_token_on_an_admin_path_is_403(http: httpx.Client, user: User, method: str, path: str) -> None:
    assert_error(http.request(method, path, headers=user.headers), 403, PERMISSION_DENIED)


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_no_credential_on_an_admin_path_is_401(http: httpx.Client, method: str, path: str) -> None:
    assert_error(http.request(method, path), 401, UNAUTHENTICATED)


def test_a_user_cannot_stop_a_model(http: httpx.Client, gateway: Gateway, user: User) -> None:
    assert_error(http.post(f"/admin/models/{gateway.ocr_model}/stop", headers=user.headers), 403, PERMISSION_DENIED)
    models = ok_json(http.get("/admin/models", headers=gateway.admin))["models"]
    assert [m["state"] for m in models if m["model"] == gateway.ocr_model] == ["loaded"]


def test_a_user_chats_for_themselves_but_not_for_another_client(http: httpx.Client, gateway: Gateway, user: User) -> None:
    mine = ok_json(http.post("/api/chat", json={"model": gateway.chat_model, **CHAT}, headers=user.headers))
    assert mine["status"] == "SUCCEEDED"
    other = {**user.headers, "x-client-id": "someone-else-entirely"}
    assert_error(http.post("/api/chat", json={"model": gateway.chat_model, **CHAT}, headers=other), 403, PERMISSION_DENIED)
