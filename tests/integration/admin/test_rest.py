"""The admin API over REST through the embedded edge: form and JSON logins, bearer calls, HTTP status mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aigw_server.edge.service import build as build_edge
from aigw_server.runtime.config import parse_config
from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import ADMIN_PASSWORD, mesh, raw_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def rest(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as gw:
        admin_port = int(gw.admin_address.rsplit(":", 1)[1])
        edge = build_edge(
            parse_config(
                {"services": {"admin": {"port": admin_port, "metrics_port": 0}}, "mesh_tls": {"mode": "plaintext"}}, env={}
            )
        )
        port = await edge.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                yield client
        finally:
            await edge.stop(0)


async def test_form_and_json_logins_then_bearer_calls(rest: httpx.AsyncClient) -> None:
    form = await rest.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert form.status_code == 200, form.text
    assert set(form.json()) >= {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in", "role"}
    as_json = await rest.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert as_json.status_code == 200, as_json.text
    headers = {"Authorization": f"Bearer {as_json.json()['access_token']}"}

    models = await rest.get("/admin/models", headers=headers)
    assert models.status_code == 200, models.text
    assert [m["model"] for m in models.json()["models"]] == ["chat-a"]
    queue = await rest.get("/admin/queue/chat-a", headers=headers)
    assert {"processing", "waiting", "utilization", "total_processed"} <= set(queue.json())

    config = (await rest.get("/admin/models/chat-a/config", headers=headers)).json()["config"]
    changed = await rest.put(
        "/admin/models/chat-a/config", headers=headers, json={"expected_version": config["version"], "patch": {"max_waiting": 5}}
    )
    assert changed.status_code == 200, changed.text
    stale = await rest.put(
        "/admin/models/chat-a/config", headers=headers, json={"expected_version": config["version"], "patch": {"max_waiting": 6}}
    )
    assert stale.status_code == 409


async def test_refusals_map_to_http_statuses(rest: httpx.AsyncClient) -> None:
    wrong = await rest.post("/auth/token", data={"username": "admin", "password": "wrong-password"})
    assert wrong.status_code == 401
    assert (await rest.get("/admin/models")).status_code == 401
    assert (await rest.post("/auth/token", content=b"{oops", headers={"content-type": "application/json"})).status_code == 400


async def test_refusals_speak_the_api_and_say_what_to_send(rest: httpx.AsyncClient) -> None:
    token = (await rest.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    before = (await rest.get("/admin/models/chat-a/config", headers=headers)).json()["config"]

    unversioned = await rest.put("/admin/models/chat-a/config", headers=headers, json={"patch": {"max_waiting": 5}})
    assert unversioned.status_code == 400, unversioned.text
    assert unversioned.json()["message"].startswith("expected_version: required")
    violation = unversioned.json()["details"][0]["field_violations"][0]
    assert violation["field"] == "expected_version"

    bad_enum = {"expected_version": before["version"], "patch": {"default_resolution": "huge"}}
    refused = await rest.put("/admin/models/chat-a/config", headers=headers, json=bad_enum)
    assert refused.status_code == 400
    assert refused.json()["message"] == 'patch.default_resolution must be one of tiny, small, base, large, gundam; got "huge"'

    relative = await rest.get("/admin/requests", params={"since": "2h"}, headers=headers)
    assert relative.status_code == 400
    assert relative.json()["message"].startswith("since must be an RFC 3339 time such as")
    assert (await rest.get("/admin/models/chat-a/config", headers=headers)).json()["config"]["version"] == before["version"]


async def test_queue_series_over_rest(rest: httpx.AsyncClient) -> None:
    token = (await rest.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    whole = await rest.get("/admin/queue/chat-a/series", headers=headers)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["model"] == "chat-a"
    assert body["bucket_seconds"] == 60
    assert len(body["minutes"]) == 60
    assert {"start", "seconds", "finished_per_minute", "total_ms", "queue_wait_ms", "peak_running", "peak_waiting"} <= set(
        body["minutes"][-1]
    )
    five = await rest.get("/admin/queue/chat-a/series", params={"minutes": "5"}, headers=headers)
    assert len(five.json()["minutes"]) == 5
    for bad in ("0", "61", "-3", "abc"):
        refused = await rest.get("/admin/queue/chat-a/series", params={"minutes": bad}, headers=headers)
        assert refused.status_code == 400, (bad, refused.text)
        assert "minutes" in refused.json()["message"]
    assert (await rest.get("/admin/queue/nope/series", headers=headers)).status_code == 404
    assert (await rest.get("/admin/queue/chat-a/series")).status_code == 401
