"""POST /admin/models/{model}/stop and /start on the OCR model; a request queued meanwhile is watched and cancelled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conformance.conftest import Gateway
from tests.e2e.conformance.contract import SseEvent, job_of, ok_json, png_with_text, sse_events, wait_for


def backends_ready(http: httpx.Client, backends: list[str]) -> dict[str, bool]:
    """Whether the router sees each backend ready (GET /health's `ocr:<backend>` components)."""
    components = ok_json(http.get("/health"))["components"]
    return {b: components.get(f"ocr:{b}") == "serving" for b in backends}


def model_entry(http: httpx.Client, gateway: Gateway) -> dict[str, Any]:
    models = ok_json(http.get("/admin/models", headers=gateway.admin))["models"]
    [entry] = [m for m in models if m["model"] == gateway.ocr_model]
    found: dict[str, Any] = entry
    return found


def waiting_in_line(job: dict[str, Any]) -> bool:
    return bool(job["state"] == "QUEUED" and job["position"] >= 1)


class Watcher(threading.Thread):
    """Reads GET /v1/requests/{id}:watch in the background."""

    def __init__(self, gateway: Gateway, request_id: str) -> None:
        super().__init__(daemon=True)
        self.gateway, self.request_id = gateway, request_id
        self.events: list[SseEvent] = []
        self.first = threading.Event()
        self.status = 0

    def run(self) -> None:
        with (
            self.gateway.client() as client,
            client.stream("GET", f"/v1/requests/{self.request_id}:watch", headers=self.gateway.admin) as reply,
        ):
            self.status = reply.status_code
            for event in sse_events(reply):
                self.events.append(event)
                self.first.set()
        self.first.set()


@pytest.fixture
def stopped_ocr(http: httpx.Client, gateway: Gateway) -> Iterator[list[str]]:
    """The OCR model stopped (the backends it was on are yielded); started again on each of them afterwards."""
    backends = model_entry(http, gateway)["loaded_on"]
    assert backends, f"{gateway.ocr_model} is not loaded anywhere"
    stop = ok_json(http.post(f"/admin/models/{gateway.ocr_model}/stop", headers=gateway.admin))
    try:
        assert sorted(stop["backends"]) == sorted(backends)
        assert stop["outcome"]
        wait_for(lambda: True if not any(backends_ready(http, backends).values()) else None, 15, "the router to see the stop")
        yield backends
    finally:
        for backend in backends:
            ok_json(http.post(f"/admin/models/{gateway.ocr_model}/start", params={"backend": backend}, headers=gateway.admin))
        wait_for(lambda: True if all(backends_ready(http, backends).values()) else None, 15, "the router to see the start")


def test_stop_start_and_cancel_of_a_queued_request(http: httpx.Client, gateway: Gateway, stopped_ocr: list[str]) -> None:
    assert model_entry(http, gateway)["state"] == "stopped"
    headers = {**gateway.admin, "content-type": "image/png", "prefer": "respond-async"}
    queued = ok_json(http.post("/api/ocr", params={"model": gateway.ocr_model}, content=png_with_text("Queued"), headers=headers))
    request_id = queued["request_id"]
    assert queued["status"] == "QUEUED"
    # Workers already waiting for this model may take it and give it back (no attempt spent) before it settles.
    job = wait_for(lambda: j if waiting_in_line(j := job_of(http, gateway.admin, request_id)) else None, 15, "a queue position")
    assert job["attempt_errors"] == []

    watcher = Watcher(gateway, request_id)
    watcher.start()
    assert watcher.first.wait(15), "the watch stream sent nothing for a queued request"
    cancelled = ok_json(http.delete(f"/v1/requests/{request_id}", headers=gateway.admin))["request"]
    assert cancelled["state"] == "CANCELLED"
    watcher.join(15)
    assert not watcher.is_alive(), "the watch stream did not end when the request was cancelled"
    assert watcher.status == 200
    events = [e.json() for e in watcher.events]
    *before, last = events
    assert before, "the watch stream sent only the end"
    assert {e["request"]["state"] for e in before} <= {"QUEUED", "RUNNING"}
    assert last["event"] == "finished"
    assert last["request"]["state"] == "CANCELLED"
    assert job_of(http, gateway.admin, request_id)["state"] == "CANCELLED"


def test_a_started_model_serves_again(http: httpx.Client, gateway: Gateway, stopped_ocr: list[str]) -> None:
    start = ok_json(http.post(f"/admin/models/{gateway.ocr_model}/start", headers=gateway.admin))
    assert start["backend"] in stopped_ocr
    assert model_entry(http, gateway)["state"] == "loaded"
    reply = http.post(
        "/api/ocr", params={"model": gateway.ocr_model}, content=png_with_text("Back Again"),
        headers={**gateway.admin, "content-type": "image/png"},
    )  # fmt: skip
    assert ok_json(reply)["status"] == "SUCCEEDED"
