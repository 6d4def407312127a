"""Dot-dot segments and their encodings in ids, model names and paths get 400/404 (405) and never a file's contents."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ADMIN_PASSWORD, JWT_SECRET
from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import RawResponse, assert_status_json, raw_get

FILE_MARKERS = ("root:x:0:0", "[supervisord]", JWT_SECRET, ADMIN_PASSWORD, "BEGIN PUBLIC KEY", "SQLite format")

USER_TARGETS = [
    "/v1/requests/../../etc/passwd",
    "/v1/requests/..%2F..%2Fetc%2Fpasswd",
    "/v1/requests/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/v1/requests/%2E%2E/%2E%2E/etc/passwd",
    "/v1/requests/....//....//etc/passwd",
    "/v1/requests/..%252F..%252Fetc%252Fpasswd",
    "/v1/requests/%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "/v1/requests/..%5C..%5Cwindows%5Cwin.ini",
    "/v1/requests/%00",
    "/v1/requests/..%2F..%2Fsupervisord.conf:watch",
    "/../../../etc/passwd",
    "/health/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/api/chat/../../../../etc/passwd",
    "/v1/models/..%2F..%2F..%2Fetc%2Fpasswd",
]

ADMIN_TARGETS = [
    ("GET", "/admin/models/..%2F..%2Fconfig/config"),
    ("GET", "/admin/models/../config/config"),
    ("GET", "/admin/models/%2e%2e%2f%2e%2e%2fsecrets%2fjwt_secret/config"),
    ("POST", "/admin/models/..%2F..%2Fetc%2Fpasswd/start"),
    ("POST", "/admin/models/..%2Ftiny-chat/stop"),
    ("GET", "/admin/queue/..%2F..%2Fetc%2Fpasswd"),
    ("DELETE", "/admin/api-keys/..%2F..%2Fetc%2Fpasswd"),
    ("DELETE", "/admin/users/..%2Fadmin"),
    ("POST", "/admin/backends/..%2Fcpu-0/switch"),
]


def assert_refused_without_contents(reply: RawResponse) -> None:
    assert reply.status_code in (400, 404, 405), reply
    assert_status_json(reply.status_code, reply.content)
    text = reply.content.decode("utf-8", "replace")
    for marker in FILE_MARKERS:
        assert marker not in text, text[:300]


@pytest.mark.parametrize("target", USER_TARGETS)
def test_traversal_in_user_paths_is_refused(secure: SecureMesh, target: str) -> None:
    for method in ("GET", "DELETE"):
        assert_refused_without_contents(raw_get(secure.url, target, secure.bearer(secure.token()), method=method))


@pytest.mark.parametrize(("method", "target"), ADMIN_TARGETS)
def test_traversal_in_admin_paths_is_refused(secure: SecureMesh, method: str, target: str) -> None:
    body = b'{"model": "tiny-chat"}' if target.endswith("/switch") else b""
    headers = {**secure.admin, "content-type": "application/json"}
    assert_refused_without_contents(raw_get(secure.url, target, headers, method=method, body=body))


@pytest.mark.parametrize("model", ["../../etc/passwd", "..\\..\\boot.ini", "tiny-chat/../../secrets", "/etc/passwd", "%2e%2e%2f"])
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_model_name_with_a_path_is_refused(secure: SecureMesh, model: str, path: str) -> None:
    with secure.client() as client:
        reply = client.post(
            path, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers=secure.bearer(secure.token())
        )
    assert_refused_without_contents(RawResponse(reply.status_code, dict(reply.headers), reply.content))


def test_a_resolution_with_a_path_is_refused(secure: SecureMesh) -> None:
    with secure.client() as client:
        reply = client.post(
            "/api/ocr",
            content=b"\x89PNG\r\n\x1a\n",
            headers={**secure.bearer(secure.token()), "content-type": "image/png", "x-resolution": "../../etc/passwd"},
        )
    assert_refused_without_contents(RawResponse(reply.status_code, dict(reply.headers), reply.content))
