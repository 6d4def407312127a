"""POST /api/ocr (raw upload, JSON with base64, async) and /api/ocr/stream (one event per page); refused uploads."""

from __future__ import annotations

import base64

import httpx

from tests.e2e.conformance.conftest import Gateway
from tests.e2e.conformance.contract import (
    INVALID_ARGUMENT,
    STATES,
    assert_error,
    assert_incremental,
    assert_snake_case,
    ok_json,
    pdf_with_pages,
    png_with_text,
    read_sse,
    wait_finished,
    words,
)

HTML = b"<!DOCTYPE html><html><body><p>not an image</p></body></html>"


def test_a_raw_png_upload_is_read(http: httpx.Client, gateway: Gateway) -> None:
    headers = {**gateway.admin, "content-type": "image/png", "x-resolution": "small"}
    reply = http.post("/api/ocr", params={"model": gateway.ocr_model}, content=png_with_text("Hello World"), headers=headers)
    body = ok_json(reply)
    assert body["request_id"]
    assert body["status"] == "SUCCEEDED"
    assert {"hello", "world"} <= words(body["text"])
    result = body["result"]
    assert result["document_type"] == "png"
    assert result["page_count"] == 1
    assert [page["page"] for page in result["pages"]] == [1]
    assert result["engine"]
    assert result["text"] == body["text"]


def test_a_json_body_with_a_base64_document_is_read(http: httpx.Client, gateway: Gateway) -> None:
    document = base64.b64encode(png_with_text("Quick Brown Fox")).decode()
    body = ok_json(http.post("/api/ocr", json={"document": document, "model": gateway.ocr_model}, headers=gateway.admin))
    assert body["status"] == "SUCCEEDED"
    assert {"quick", "brown", "fox"} <= words(body["text"])


def test_async_ocr_answers_at_once_and_is_polled_to_its_result(http: httpx.Client, gateway: Gateway) -> None:
    document = base64.b64encode(png_with_text("Lazy Dog")).decode()
    reply = http.post("/api/ocr", json={"document": document, "model": gateway.ocr_model, "async": True}, headers=gateway.admin)
    answer = ok_json(reply)
    assert answer["status"] in {"QUEUED", "RUNNING"}
    job = wait_finished(http, gateway.admin, answer["request_id"])
    assert job["state"] == "SUCCEEDED", job
    assert job["kind"] == "JOB_KIND_OCR"
    assert {"lazy", "dog"} <= words(job["ocr_result"]["text"])


def test_a_pdf_is_streamed_page_by_page(http: httpx.Client, gateway: Gateway) -> None:
    pdf = pdf_with_pages("First page", "Second page")
    headers = {**gateway.admin, "content-type": "application/pdf", "x-resolution": "tiny"}
    with http.stream("POST", "/api/ocr/stream", params={"model": gateway.ocr_model}, content=pdf, headers=headers) as reply:
        events = read_sse(reply)
    payloads = [e.json() for e in events]
    for payload in payloads:
        assert_snake_case(payload)
        assert payload["status"] in STATES
    assert len({p["request_id"] for p in payloads}) == 1
    assert payloads[0]["status"] in {"QUEUED", "RUNNING"}
    assert payloads[-1]["status"] == "SUCCEEDED"
    pages = [(e, p) for e, p in zip(events, payloads, strict=True) if p.get("page")]
    assert [p["page"]["page"] for _, p in pages] == [1, 2]
    assert {p["page_count"] for _, p in pages} == {2}
    assert "first" in words(pages[0][1]["page"]["text"])
    assert "second" in words(pages[1][1]["page"]["text"])
    assert_incremental(events[0].at, pages[0][0].at)  # the state came before the pages were done


def test_an_html_page_sent_as_png_is_400(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post(
        "/api/ocr", params={"model": gateway.ocr_model}, content=HTML, headers={**gateway.admin, "content-type": "image/png"}
    )
    assert_error(reply, 400, INVALID_ARGUMENT)


def test_a_disguised_upload_stores_no_request(http: httpx.Client, gateway: Gateway, client_id: str) -> None:
    headers = {**gateway.admin, "content-type": "image/png", "x-client-id": client_id}
    assert http.post("/api/ocr", params={"model": gateway.ocr_model}, content=HTML, headers=headers).status_code == 400
    history = ok_json(http.get("/admin/requests", params={"client_id": client_id}, headers=gateway.admin))
    assert history["requests"] == [], "a refused upload was stored as a request (DESIGN §6: bad input changes nothing)"


def test_an_unknown_resolution_is_400(http: httpx.Client, gateway: Gateway) -> None:
    headers = {**gateway.admin, "content-type": "image/png", "x-resolution": "enormous"}
    reply = http.post("/api/ocr", params={"model": gateway.ocr_model}, content=png_with_text("Hi"), headers=headers)
    assert_error(reply, 400, INVALID_ARGUMENT, "resolution")
