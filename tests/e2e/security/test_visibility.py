"""A request is visible to the user who sent it (and admins) only: others get 404 for reading, watching and cancelling it."""

from __future__ import annotations

from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import CHAT, NOT_FOUND, refusal


def test_another_users_request_is_not_found(secure: SecureMesh) -> None:
    alice, bob = secure.bearer(secure.token("alice")), secure.bearer(secure.token("bob"))
    with secure.client() as client:
        submitted = client.post("/api/chat", json={**CHAT, "async": True}, headers=alice)
        assert submitted.status_code == 200, submitted.text
        request_id = submitted.json()["request_id"]
        refusal(client.get(f"/v1/requests/{request_id}", headers=bob), 404, NOT_FOUND, request_id)
        refusal(client.get(f"/v1/requests/{request_id}:watch", headers=bob), 404, NOT_FOUND, request_id)
        refusal(client.delete(f"/v1/requests/{request_id}", headers=bob), 404, NOT_FOUND, request_id)
        unknown = client.get("/v1/requests/0123456789abcdef0123456789abcdef", headers=bob)
        own = client.get(f"/v1/requests/{request_id}", headers=alice)
        as_admin = client.get(f"/v1/requests/{request_id}", headers=secure.admin)
    # /v1/ answers errors in OpenAI's shape; an unknown id reads exactly like another user's.
    assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}
    assert own.status_code == 200, own.text
    assert own.json()["request"]["request_id"] == request_id
    assert own.json()["request"]["state"] != "CANCELLED"
    assert as_admin.status_code == 200, as_admin.text


def test_a_user_cannot_act_for_another_client_id(secure: SecureMesh) -> None:
    with secure.client() as client:
        reply = client.post("/api/chat", json=CHAT, headers={**secure.bearer(secure.token("carol")), "x-client-id": "alice"})
    refusal(reply, 403, 7, "X-Client-ID")
