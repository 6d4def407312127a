"""Response headers: sane request ids only, no cross-origin grants, no software banners, JSON errors."""

from __future__ import annotations

import re

import pytest

from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import CHAT, UNAUTHENTICATED, raw_get, refusal

FRESH_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "request_id",
    ["x" * 200, "two words", "caf\u00e9-id", "id\tid"],
    ids=["too long", "with a space", "not ASCII", "with a tab"],
)
def test_an_unsafe_client_request_id_is_replaced(secure: SecureMesh, request_id: str) -> None:
    reply = raw_get(secure.url, "/v1/models", {"x-request-id": request_id})
    assert reply.status_code == 401
    assert FRESH_ID.fullmatch(reply.headers["x-request-id"]), reply.headers


def test_a_sane_client_request_id_is_echoed(secure: SecureMesh) -> None:
    with secure.client() as client:
        reply = client.post("/api/chat", json=CHAT, headers={"x-request-id": "client-chosen-id-42"})
    refusal(reply, 401, UNAUTHENTICATED)
    assert reply.headers["x-request-id"] == "client-chosen-id-42"


def test_no_cross_origin_access_is_granted(secure: SecureMesh) -> None:
    origin = {"origin": "https://evil.example"}
    preflight = {**origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    with secure.client() as client:
        replies = [
            client.options("/api/chat", headers=preflight),
            client.post("/api/chat", json=CHAT, headers={**origin, **secure.bearer(secure.token())}),
            client.get("/health", headers=origin),
        ]
    for reply in replies:
        assert reply.status_code < 500
        granted = {k for k in reply.headers if k.lower().startswith("access-control-allow")}
        assert not granted, reply.headers


def test_answers_carry_no_software_banner(secure: SecureMesh) -> None:
    with secure.client() as client:
        replies = [client.get("/health"), client.get("/nowhere"), client.post("/api/chat", content=b"{")]
    for reply in replies:
        assert "server" not in reply.headers, reply.headers
        assert "x-powered-by" not in reply.headers, reply.headers
