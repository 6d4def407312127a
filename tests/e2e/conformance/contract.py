"""What every answer of the REST contract must look like, SSE reading, polling, and the documents the OCR tests send."""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import pymupdf
from google.rpc import code_pb2
from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
mupdf: Any = pymupdf  # PyMuPDF ships no type hints

INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
ABORTED = 10
UNAUTHENTICATED = 16

# The HTTP status Envoy's transcoder answers for each gRPC code (Grpc::Utility::grpcToHttpStatus).
HTTP_OF_CODE = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403,
    8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
STATES = frozenset({"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"})
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
WATCH_EVENTS = frozenset({"position", "granted", "progress", "requeued", "finished"})
# Fields that are proto maps: their keys are data (backend names, error codes), not field names.
MAP_FIELDS = frozenset({"components", "failures_by_reason"})
# The least time between the first and the last part of an answer that counts as streamed rather than buffered.
INCREMENTAL_SPREAD = 0.01
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")

T = TypeVar("T")


class Answer(Protocol):
    """What waiting out a rate limit needs of an HTTP response (httpx's, or httpx2's inside the openai SDK)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def close(self) -> None: ...


AnswerT = TypeVar("AnswerT", bound=Answer)


def waiting_out_rate_limits(send: Callable[[], AnswerT], attempts: int = 6, longest: float = 20.0) -> AnswerT:
    """Sends again after an HTTP 429 with a short Retry-After: a deployment may limit the suite's rate."""
    for _ in range(attempts - 1):
        answer = send()
        try:
            delay = float(answer.headers.get("retry-after", ""))
        except ValueError:
            return answer
        if answer.status_code != 429 or delay > longest:
            return answer
        answer.close()
        time.sleep(delay)
    return send()


class RateLimitRetry(httpx.BaseTransport):
    """An HTTP transport that waits out short rate limits."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport(retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return waiting_out_rate_limits(lambda: self._inner.handle_request(request))

    def close(self) -> None:
        self._inner.close()


def assert_request_id_header(reply: httpx.Response) -> str:
    """Every answer, errors included, carries an `x-request-id` header."""
    rid: str = reply.headers.get("x-request-id", "")
    assert rid, f"HTTP {reply.status_code} without x-request-id: {dict(reply.headers)}"
    return rid


def assert_snake_case(value: Any, path: str = "$") -> None:
    """Every JSON field name is snake_case (the proto names), at every depth; map keys and `@type` excepted."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            assert_snake_case(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert key == "@type" or _SNAKE.match(key), f"{path}: field {key!r} is not snake_case"
            if key not in MAP_FIELDS:
                assert_snake_case(item, f"{path}.{key}")


def ok_json(reply: httpx.Response) -> dict[str, Any]:
    """A 200 JSON answer with snake_case fields and an x-request-id header."""
    assert reply.status_code == 200, f"HTTP {reply.status_code}: {reply.text[:500]}"
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    assert_request_id_header(reply)
    body: dict[str, Any] = reply.json()
    assert_snake_case(body)
    return body


BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def as_status(body: Any) -> Any:
    """An error body as a google.rpc.Status: the embedded edge answers /v1/ errors in OpenAI's shape instead."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    violation = {"field": error["param"], "description": error["message"]}
    details = [{"@type": BAD_REQUEST, "field_violations": [violation]}] if error["param"] else []
    return {"code": code_pb2.Code.Value(str(error["code"]).upper()), "message": error["message"], "details": details}


def assert_error(reply: httpx.Response, http_status: int, code: int, message: str = "") -> dict[str, Any]:
    """The exact refusal: HTTP status, a google.rpc.Status JSON body with `code` (mapped as Envoy maps it), `message` in it."""
    text = reply.text[:500]
    assert reply.status_code == http_status, f"expected HTTP {http_status}, got {reply.status_code}: {text}"
    assert_request_id_header(reply)
    assert reply.headers.get("content-type", "").startswith("application/json"), f"not JSON: {reply.headers} {text}"
    status: dict[str, Any] = as_status(reply.json())
    assert set(status) == {"code", "message", "details"}, text
    assert status["code"] == code, text
    assert HTTP_OF_CODE[code] == http_status
    assert isinstance(status["message"], str), text
    assert status["message"], text
    assert message in status["message"], text
    assert isinstance(status["details"], list), text
    assert_snake_case(status)
    return status


def assert_edge_error(reply: httpx.Response, http_status: int, code: int, strict: bool) -> None:
    """An error the edge answers itself (bad JSON, unknown path): Envoy sends these without a Status body (docs/edge.md)."""
    if strict or reply.headers.get("content-type", "").startswith("application/json"):
        assert_error(reply, http_status, code)
    else:
        assert reply.status_code == http_status, f"expected HTTP {http_status}, got {reply.status_code}: {reply.text[:300]}"


def field_violations(status: dict[str, Any]) -> list[str]:
    """The fields named by the status's BadRequest details."""
    return [
        v["field"]
        for d in status["details"]
        if d.get("@type") == "type.googleapis.com/google.rpc.BadRequest"
        for v in d.get("field_violations", [])
    ]


def as_int(value: Any) -> int:
    """An integer field: int32 prints as a number, int64 as a decimal string (protobuf's JSON mapping)."""
    if isinstance(value, str):
        assert re.fullmatch(r"-?\d+", value), value
        return int(value)
    assert isinstance(value, int), value
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event and when it arrived."""

    event: str
    data: str
    at: float

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


def sse_events(reply: httpx.Response) -> Iterator[SseEvent]:
    """The events of a text/event-stream answer, as they arrive."""
    event, data = "message", []
    for line in reply.iter_lines():
        if line:
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value.removeprefix(" "))
            elif field == "event":
                event = value.strip()
            continue
        if data:
            yield SseEvent(event, "\n".join(data), time.monotonic())
        event, data = "message", []
    if data:
        yield SseEvent(event, "\n".join(data), time.monotonic())


def read_sse(reply: httpx.Response) -> list[SseEvent]:
    """A 200 text/event-stream answer read to its end."""
    if reply.status_code != 200:
        reply.read()
    assert reply.status_code == 200, f"HTTP {reply.status_code}: {reply.text[:500]}"
    assert reply.headers.get("content-type", "").startswith("text/event-stream"), reply.headers
    assert_request_id_header(reply)
    events = list(sse_events(reply))
    assert all(e.event == "message" for e in events), [e for e in events if e.event != "message"]
    return events


def assert_incremental(first_at: float, last_at: float) -> None:
    """Parts of an answer came apart in time: a buffered answer arrives in one read, within a millisecond."""
    assert last_at - first_at >= INCREMENTAL_SPREAD, f"all parts arrived within {1000 * (last_at - first_at):.1f} ms"


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Calls `probe` until it returns something other than None, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(interval)


def job_of(client: httpx.Client, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    """GET /v1/requests/{id}: the job as the gateway keeps it."""
    body = ok_json(client.get(f"/v1/requests/{request_id}", headers=headers))
    job: dict[str, Any] = body["request"]
    assert job["request_id"] == request_id
    assert job["state"] in STATES, job["state"]
    return job


def wait_finished(client: httpx.Client, headers: dict[str, str], request_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Polls GET /v1/requests/{id} until the request is in a final state; returns that job."""
    return wait_for(
        lambda: job if (job := job_of(client, headers, request_id))["state"] in FINAL_STATES else None,
        timeout,
        f"request {request_id} to finish",
    )


def png_with_text(text: str, width: int = 520, height: int = 100) -> bytes:
    """A PNG with `text` in black DejaVu Sans on white."""
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((20, 25), text, fill="black", font=ImageFont.truetype(FONT, 40))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def pdf_with_pages(*texts: str) -> bytes:
    """A small PDF with one page per text."""
    doc = mupdf.open()
    for text in texts:
        doc.new_page(width=360, height=120).insert_text((20, 60), text, fontsize=24)
    data: bytes = doc.tobytes()
    doc.close()
    return data


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))
