"""Assertions and raw-HTTP tools shared by the security tests."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from google.rpc import code_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ADMIN_PASSWORD, JWT_SECRET

REPO = Path(__file__).resolve().parents[3]

OK = 0
INVALID_ARGUMENT = 3
NOT_FOUND = 5
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAUTHENTICATED = 16

# The HTTP status Envoy's transcoder answers for each gRPC code (Grpc::Utility::grpcToHttpStatus).
HTTP_OF_CODE = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403,
    8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
# Statuses the HTTP server itself answers from the request's framing, before any transcoding.
FRAMING_STATUSES = frozenset({405, 408, 411, 413, 414, 431, 501})

# Text that must never reach a client: stack traces, source paths, secrets, exception class names, internals.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    str(REPO),
    "site-packages",
    '.py"',
    JWT_SECRET,
    ADMIN_PASSWORD,
    "KeyError",
    "ValueError",
    "TypeError",
    "AttributeError",
    "IndexError",
    "RecursionError",
    "DecodeError",
    "NoneType",
    "Exception",
    "StatusCode.",
    "AioRpcError",
    "ipv4:",
    "Failed to connect",
    "object at 0x",
    "pymongo",
    "bson",
)

CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
OPENAI_CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


@dataclass(frozen=True)
class RawResponse:
    """A response read off a raw socket."""

    status_code: int
    headers: dict[str, str]
    content: bytes


def is_clean(text: str) -> bool:
    return not any(marker in text for marker in LEAK_MARKERS)


def assert_clean(text: str) -> None:
    """No stack trace, source path, secret, exception class name or internal address in a client-visible text."""
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked in: {text[:500]}"


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


def assert_status_json(status: int, body: bytes) -> dict[str, Any]:
    """An error body is exactly a google.rpc.Status whose code maps to the HTTP status, and leaks nothing."""
    text = body.decode("utf-8", "replace")
    assert_clean(text)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise AssertionError(f"HTTP {status}: the error body is not JSON: {text[:300]!r}") from None
    parsed = as_status(parsed)
    assert isinstance(parsed, dict), text[:300]
    assert set(parsed) == {"code", "message", "details"}, text[:300]
    code, message, details = parsed["code"], parsed["message"], parsed["details"]
    assert isinstance(code, int), text[:300]
    assert isinstance(message, str), text[:300]
    assert message, text[:300]
    assert isinstance(details, list), text[:300]
    assert code != OK
    if status not in FRAMING_STATUSES:
        assert HTTP_OF_CODE.get(code, 500) == status, f"HTTP {status} with gRPC code {code}: {text[:300]}"
    return parsed


def refusal(reply: httpx.Response | RawResponse, http_status: int, code: int, message: str = "") -> dict[str, Any]:
    """Asserts the exact refusal: HTTP status, a JSON google.rpc.Status with `code`, and `message` in its message."""
    text = reply.content[:500].decode("utf-8", "replace")
    assert reply.status_code == http_status, f"expected {http_status}, got {reply.status_code}: {text}"
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    status = assert_status_json(reply.status_code, reply.content)
    assert status["code"] == code, status
    assert message in status["message"], status
    return status


def _dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2 :]
    return b"".join(out)


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body)


def raw_request(url: str, request: bytes, timeout: float = 30.0, source_ip: str = "127.0.0.1") -> RawResponse:
    """Sends bytes exactly as given (no path normalisation) and reads the answer until the server closes."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    with socket.create_connection(address, timeout=timeout, source_address=(source_ip, 0)) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def raw_get(url: str, target: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b"") -> RawResponse:
    """One request with an exact request target, on a connection the server closes after answering."""
    lines = [f"{method} {target} HTTP/1.1", "host: edge", "connection: close", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw_request(url, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def rpc_count(metrics_port: int, service: str, method: str) -> float:
    """How many calls of `method` a service has answered, from its Prometheus side port."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "aigw_rpc_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("service") == service and labels.get("method") == method:
                total += sample.value
    return total
