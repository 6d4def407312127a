"""No log file of the mesh holds an API key's secret, the admin password, the JWT secret or a whole bearer token."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import ADMIN_PASSWORD, JWT_SECRET
from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import CHAT, UNAUTHENTICATED, refusal


def log_texts(secure: SecureMesh) -> dict[str, str]:
    files = [p for p in secure.logs.rglob("*") if p.is_file()]
    files.append(Path(secure.mesh.cfg.data_dir) / "launcher.out")
    assert len(files) >= 7, files
    return {str(p): p.read_text(errors="replace") for p in files if p.exists()}


def test_secrets_never_reach_the_logs(secure: SecureMesh) -> None:
    with secure.client() as client:
        created = client.post("/admin/api-keys", json={"name": "log-hygiene"}, headers=secure.admin)
        assert created.status_code == 200, created.text
        api_key = created.json()["api_key"]
        key_id = created.json()["key"]["key_id"]
        assert api_key.startswith(f"aigw_{key_id}_"), api_key
        secret = api_key.removeprefix(f"aigw_{key_id}_")
        wrong_secret = "W" * len(secret)
        assert client.get("/v1/models", headers=secure.bearer(api_key)).status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": api_key}).status_code == 200
        served = client.post("/api/chat", json={**CHAT, "async": True}, headers=secure.bearer(api_key))
        assert served.status_code == 200, served.text
        for bad in (f"aigw_{key_id}_{wrong_secret}", f"aigw_fedcba9876543210_{wrong_secret}"):
            refusal(client.get("/v1/models", headers=secure.bearer(bad)), 401, UNAUTHENTICATED)
            refusal(client.post("/api/chat", json=CHAT, headers={"x-api-key": bad}), 401, UNAUTHENTICATED)
        login = client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        refresh = login.json()["refresh_token"]
        rotated = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert rotated.status_code == 200, rotated.text
        reused = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        refusal(reused, 401, UNAUTHENTICATED)
        user_token = secure.token("log-user")
        assert client.post("/api/chat", json={**CHAT, "async": True}, headers=secure.bearer(user_token)).status_code == 200
        refusal(client.post("/api/chat", json=CHAT, headers=secure.bearer(user_token + "x")), 401, UNAUTHENTICATED)
    time.sleep(1.0)
    secrets = {
        "API key secret": secret,
        "wrong API key secret": wrong_secret,
        "admin password": ADMIN_PASSWORD,
        "JWT secret": JWT_SECRET,
        "admin access token": secure.admin_token,
        "fresh access token": login.json()["access_token"],
        "refresh token": refresh,
        "rotated access token": rotated.json()["access_token"],
        "rotated refresh token": rotated.json()["refresh_token"],
        "user token": user_token,
    }
    for path, text in log_texts(secure).items():
        for what, value in secrets.items():
            assert value not in text, f"{what} found in {path}"
