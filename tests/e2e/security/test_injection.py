"""MongoDB operators smuggled through JSON fields, path ids and query parameters are refused and leak no data."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import CHAT, INVALID_ARGUMENT, NOT_FOUND, raw_get, refusal

OPERATORS = [{"$gt": ""}, {"$ne": None}, {"$regex": ".*"}, {"$where": "sleep(1000)"}, {"$exists": True}]


def with_operator(field: str, op: object) -> dict[str, object]:
    """A chat body whose `field` holds the operator object."""
    message: dict[str, object] = {"role": "user", "content": "x"}
    if field == "message role":
        return {**CHAT, "messages": [{**message, "role": op}]}
    if field == "message content":
        return {**CHAT, "messages": [{**message, "content": op}]}
    return {**CHAT, field: op}


CHAT_FIELDS = ["model", "message role", "message content", "priority", "idempotency_key"]


# OpenAI's body has no priority or idempotency key field.
CASES = [("/api/chat", f) for f in CHAT_FIELDS] + [
    ("/v1/chat/completions", f) for f in ("message content", "message role", "model")
]


@pytest.mark.parametrize(("path", "field"), CASES)
def test_an_operator_in_a_chat_field_gets_400(secure: SecureMesh, path: str, field: str) -> None:
    with secure.client() as client:
        for op in OPERATORS:
            reply = client.post(path, json=with_operator(field, op), headers=secure.bearer(secure.token()))
            refusal(reply, 400, INVALID_ARGUMENT)


LOGINS = [
    ("application/json", json.dumps({"username": {"$gt": ""}, "password": {"$gt": ""}}).encode()),
    ("application/json", json.dumps({"username": "admin", "password": {"$ne": None}}).encode()),
    ("application/json", json.dumps({"username": {"$regex": "^adm"}, "password": "x"}).encode()),
    ("application/x-www-form-urlencoded", b"username[$gt]=&password[$gt]="),
    ("application/x-www-form-urlencoded", b"username=admin&password[$ne]=x"),
]


@pytest.mark.parametrize(("content_type", "body"), LOGINS)
def test_an_operator_in_a_login_never_logs_in(secure: SecureMesh, content_type: str, body: bytes) -> None:
    with secure.client("127.0.0.80") as client:
        reply = client.post("/auth/token", content=body, headers={"content-type": content_type})
    refusal(reply, 400, INVALID_ARGUMENT)
    assert "access_token" not in reply.text


@pytest.mark.parametrize("request_id", ['{"$gt":""}', '{"$ne":null}', "[$ne]", "$where", "a' || '1'=='1"])
def test_an_operator_as_a_request_id_is_not_found(secure: SecureMesh, request_id: str) -> None:
    target = f"/v1/requests/{quote(request_id, safe='')}"
    for method in ("GET", "DELETE"):
        reply = raw_get(secure.url, target, secure.bearer(secure.token()), method=method)
        refusal(reply, 404, NOT_FOUND)


@pytest.fixture(scope="module")
def victim_request(secure: SecureMesh) -> str:
    with secure.client() as client:
        reply = client.post("/api/chat", json={**CHAT, "async": True}, headers=secure.bearer(secure.token("injection-victim")))
    assert reply.status_code == 200, reply.text
    request_id: str = reply.json()["request_id"]
    return request_id


@pytest.mark.parametrize(
    "query",
    ["client_id[$ne]=x", "model[$regex]=.*", "client_id.$ne=x", "state[$ne]=QUEUED", "page_size[$gt]=0", "$where=1"],
)
def test_an_operator_in_a_history_query_parameter_gets_400(secure: SecureMesh, victim_request: str, query: str) -> None:
    reply = raw_get(secure.url, f"/admin/requests?{query}", secure.admin)
    refusal(reply, 400, INVALID_ARGUMENT)


@pytest.mark.parametrize("value", ['{"$ne":null}', '{"$gt":""}', '{"$regex":".*"}'])
@pytest.mark.parametrize("name", ["client_id", "model"])
def test_an_operator_as_a_filter_value_matches_nothing(secure: SecureMesh, victim_request: str, name: str, value: str) -> None:
    with secure.client() as client:
        everything = client.get("/admin/requests", headers=secure.admin)
        filtered = client.get("/admin/requests", params={name: value}, headers=secure.admin)
    assert everything.status_code == 200, everything.text
    assert victim_request in everything.text
    assert filtered.status_code == 200, filtered.text
    assert filtered.json()["requests"] == []
