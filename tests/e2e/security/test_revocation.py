"""A revoked API key stops working: at once on the admin API, within the router's short key cache on inference."""

from __future__ import annotations

import time

from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import UNAUTHENTICATED, refusal

ROUTER_KEY_CACHE_SECONDS = 5.0


def test_a_revoked_api_key_is_refused(secure: SecureMesh) -> None:
    with secure.client() as client:
        created = client.post("/admin/api-keys", json={"name": "to-revoke", "role": "admin"}, headers=secure.admin)
        assert created.status_code == 200, created.text
        key, key_id = created.json()["api_key"], created.json()["key"]["key_id"]
        assert client.get("/admin/models", headers=secure.bearer(key)).status_code == 200
        assert client.get("/v1/models", headers=secure.bearer(key)).status_code == 200
        revoked = client.delete(f"/admin/api-keys/{key_id}", headers=secure.admin)
        assert revoked.status_code == 200, revoked.text
        refusal(client.get("/admin/models", headers=secure.bearer(key)), 401, UNAUTHENTICATED)
        deadline = time.monotonic() + ROUTER_KEY_CACHE_SECONDS + 2
        while client.get("/v1/models", headers=secure.bearer(key)).status_code == 200:
            assert time.monotonic() < deadline, "the router still accepts a revoked key"
            time.sleep(0.25)
        refusal(client.get("/v1/models", headers=secure.bearer(key)), 401, UNAUTHENTICATED)
