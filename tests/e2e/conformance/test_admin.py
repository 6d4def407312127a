"""Operator REST paths: models, queue stats, crash log, request history, model config, auto-switch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conformance.conftest import Gateway
from tests.e2e.conformance.contract import (
    ABORTED,
    INVALID_ARGUMENT,
    NOT_FOUND,
    as_int,
    assert_edge_error,
    assert_error,
    is_number,
    ok_json,
    wait_finished,
)

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def test_models_lists_models_and_backends(http: httpx.Client, gateway: Gateway) -> None:
    body = ok_json(http.get("/admin/models", headers=gateway.admin))
    models = {m["model"]: m for m in body["models"]}
    assert models[gateway.chat_model]["kind"] == "chat"
    assert models[gateway.ocr_model]["kind"] == "ocr"
    for model in models.values():
        assert model["state"] in {"loaded", "stopped"}
        assert isinstance(model["enabled"], bool)
        assert isinstance(model["loaded_on"], list)
        assert set(model["loaded_on"]) <= set(model["backends"])
        assert "processing" in model["queue"]
    assert models[gateway.chat_model]["state"] == "loaded"
    for backend in body["backends"]:
        assert backend["kind"] in {"textgen", "ocr"}
        assert backend["health"] in {"SERVING", "NOT_SERVING", "UNREACHABLE"}
        assert backend["status"]["backend"]


def test_queue_stats_have_the_original_fields(http: httpx.Client, gateway: Gateway) -> None:
    before = ok_json(http.get(f"/admin/queue/{gateway.chat_model}", headers=gateway.admin))
    ok_json(http.post("/api/chat", json={"model": gateway.chat_model, **CHAT}, headers=gateway.admin))
    after = ok_json(http.get(f"/admin/queue/{gateway.chat_model}", headers=gateway.admin))
    assert after["model"] == gateway.chat_model
    assert as_int(after["processing"]) >= 0
    assert as_int(after["waiting"]) >= 0
    assert is_number(after["utilization"])
    assert after["utilization"] >= 0
    # A JSON number, as the original API gave it (not a 64-bit integer rendered as a string).
    assert is_number(after["total_processed"])
    assert float(after["total_processed"]).is_integer()
    assert after["total_processed"] >= before["total_processed"] + 1


def test_queue_stats_of_an_unknown_model_are_404(http: httpx.Client, gateway: Gateway) -> None:
    assert_error(http.get("/admin/queue/conformance-no-such-model", headers=gateway.admin), 404, NOT_FOUND)


def test_the_crash_log_is_listed_and_filtered(http: httpx.Client, gateway: Gateway) -> None:
    body = ok_json(http.get("/admin/crashes", headers=gateway.admin))
    assert isinstance(body["events"], list)
    assert isinstance(body["next_page_token"], str)
    filtered = ok_json(http.get("/admin/crashes", params={"model": gateway.chat_model, "page_size": 2}, headers=gateway.admin))
    assert len(filtered["events"]) <= 2
    assert all(e["model"] == gateway.chat_model for e in filtered["events"])
    bad_kind = http.get("/admin/crashes", params={"kind": "NOT_A_KIND"}, headers=gateway.admin)
    assert_edge_error(bad_kind, 400, INVALID_ARGUMENT, gateway.local)


def test_history_is_filtered_and_paginated(http: httpx.Client, gateway: Gateway, client_id: str) -> None:
    headers = {**gateway.admin, "x-client-id": client_id}
    submitted = [
        ok_json(http.post("/api/chat", json={"model": gateway.chat_model, **CHAT, "async": True}, headers=headers))["request_id"]
        for _ in range(3)
    ]
    for request_id in submitted:
        wait_finished(http, gateway.admin, request_id)
    query: dict[str, str | int] = {
        "client_id": client_id,
        "model": gateway.chat_model,
        "state": "SUCCEEDED",
        "kind": "JOB_KIND_CHAT",
        "page_size": 2,
    }
    first = ok_json(http.get("/admin/requests", params=query, headers=gateway.admin))
    assert len(first["requests"]) == 2
    assert first["next_page_token"]
    second = ok_json(http.get("/admin/requests", params={**query, "page_token": first["next_page_token"]}, headers=gateway.admin))
    assert len(second["requests"]) == 1
    assert second["next_page_token"] == ""
    listed = first["requests"] + second["requests"]
    assert [r["request_id"] for r in listed] == submitted[::-1], "history is newest first"
    assert {r["client_id"] for r in listed} == {client_id}
    failed = ok_json(http.get("/admin/requests", params={**query, "state": "FAILED"}, headers=gateway.admin))
    assert failed["requests"] == []


def model_config(http: httpx.Client, gateway: Gateway, model: str) -> dict[str, Any]:
    config: dict[str, Any] = ok_json(http.get(f"/admin/models/{model}/config", headers=gateway.admin))["config"]
    return config


def put_config(http: httpx.Client, gateway: Gateway, model: str, version: int, patch: dict[str, Any]) -> httpx.Response:
    return http.put(f"/admin/models/{model}/config", json={"expected_version": version, "patch": patch}, headers=gateway.admin)


@pytest.fixture
def ocr_config(http: httpx.Client, gateway: Gateway) -> Iterator[dict[str, Any]]:
    """The OCR model's config as it was; `max_waiting` is put back afterwards."""
    original = model_config(http, gateway, gateway.ocr_model)
    yield original
    now = model_config(http, gateway, gateway.ocr_model)
    if now["max_waiting"] != original["max_waiting"]:
        put_config(http, gateway, gateway.ocr_model, as_int(now["version"]), {"max_waiting": original["max_waiting"]})


def test_model_config_is_versioned(http: httpx.Client, gateway: Gateway, ocr_config: dict[str, Any]) -> None:
    model, version, waiting = gateway.ocr_model, as_int(ocr_config["version"]), ocr_config["max_waiting"]
    assert ocr_config["model"] == model
    assert isinstance(ocr_config["enabled"], bool)
    changed = ok_json(put_config(http, gateway, model, version, {"max_waiting": waiting + 1}))["config"]
    assert as_int(changed["version"]) == version + 1
    assert changed["max_waiting"] == waiting + 1
    assert changed["updated_by"] == gateway.admin_username
    assert_error(put_config(http, gateway, model, version, {"max_waiting": waiting + 2}), 409, ABORTED)
    assert model_config(http, gateway, model)["max_waiting"] == waiting + 1
    refused = put_config(http, gateway, model, version + 1, {"max_waiting": -1})
    assert_error(refused, 400, INVALID_ARGUMENT, "max_waiting")
    restored = ok_json(put_config(http, gateway, model, version + 1, {"max_waiting": waiting}))["config"]
    assert as_int(restored["version"]) == version + 2
    assert restored["max_waiting"] == waiting


def test_the_config_of_an_unknown_model_is_404(http: httpx.Client, gateway: Gateway) -> None:
    assert_error(http.get("/admin/models/conformance-no-such-model/config", headers=gateway.admin), 404, NOT_FOUND)


def test_autoswitch_is_shown_and_toggled(http: httpx.Client, gateway: Gateway) -> None:
    shown = ok_json(http.get("/admin/autoswitch", headers=gateway.admin))
    for field in ("demand", "plan", "decisions"):
        assert isinstance(shown[field], list)
    assert as_int(shown["window_days"]) >= 1
    assert is_number(shown["cooldown_seconds"])
    enabled = shown["enabled"]
    try:
        flipped = ok_json(http.put("/admin/autoswitch", json={"enabled": not enabled}, headers=gateway.admin))
        assert flipped["enabled"] is (not enabled)
        assert ok_json(http.get("/admin/autoswitch", headers=gateway.admin))["enabled"] is (not enabled)
    finally:
        restored = ok_json(http.put("/admin/autoswitch", json={"enabled": enabled}, headers=gateway.admin))
    assert restored["enabled"] is enabled
