"""Errors through the edge: google.rpc.Status bodies, Envoy's HTTP statuses, Retry-After, no leaked internals."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from tests.helpers import free_port
from tests.integration.edge.conftest import Running, StartEdge


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("INVALID_ARGUMENT", 400),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("ABORTED", 409),
        ("FAILED_PRECONDITION", 400),
        ("CANCELLED", 499),
        ("UNIMPLEMENTED", 501),
        ("DEADLINE_EXCEEDED", 504),
    ],
)
async def test_status_codes_become_envoy_http_statuses(running: Running, code: str, http: int) -> None:
    r = await running.client.post("/v1/fail", json={"code": code, "message": f"because {code}"})
    assert r.status_code == http
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"code": code_pb2.Code.Value(code), "message": f"because {code}", "details": []}
    assert r.headers["x-request-id"]


async def test_resource_exhausted_carries_retry_after_and_its_details(running: Running) -> None:
    fail = {"code": "RESOURCE_EXHAUSTED", "message": "queue full", "retry_after_seconds": 2.5}
    r = await running.client.post("/v1/fail", json=fail)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json() == {
        "code": code_pb2.RESOURCE_EXHAUSTED,
        "message": "queue full",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "2.500s"}],
    }


async def test_unavailable_with_retry_info_is_503_with_retry_after(running: Running) -> None:
    r = await running.client.post("/v1/fail", json={"code": "UNAVAILABLE", "message": "no backend", "retry_after_seconds": 1})
    assert (r.status_code, r.headers["retry-after"], r.json()["message"]) == (503, "1", "no backend")


async def test_a_crash_upstream_is_a_generic_500(running: Running) -> None:
    r = await running.client.post("/v1/fail", json={"code": "CRASH"})
    assert r.status_code == 500
    assert r.json()["code"] == code_pb2.INTERNAL
    assert "hunter2" not in r.text


async def test_transport_text_without_a_built_status_does_not_leak(running: Running) -> None:
    r = await running.client.post("/v1/fail", json={"code": "PLAIN"})
    assert r.status_code == 503
    assert r.json() == {"code": code_pb2.UNAVAILABLE, "message": "the service is unavailable; try again", "details": []}


async def test_an_unreachable_upstream_is_503(start_edge: StartEdge) -> None:
    running = await start_edge(upstream=f"127.0.0.1:{free_port()}")
    r = await running.client.get("/v1/messages/1")
    assert r.status_code == 503
    assert r.json()["code"] == code_pb2.UNAVAILABLE
    assert "127.0.0.1" not in r.text


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"count": ', "not valid JSON"),
        (b'{"count": "many"}', "count"),
        (b'{"count": 1, "bogus": true}', "bogus"),
        (b"[]", "must be an object"),
    ],
)
async def test_bad_json_is_400_with_a_status_body(running: Running, body: bytes, why: str) -> None:
    r = await running.client.post("/v1/count", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert why in r.json()["message"]


async def test_unknown_query_parameter_is_400(running: Running) -> None:
    r = await running.client.get("/v1/messages/1?colour=red")
    assert r.status_code == 400
    assert "colour" in r.json()["message"]


async def test_unknown_path_is_404_and_wrong_method_is_405(running: Running) -> None:
    missing = await running.client.get("/v1/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["code"] == code_pb2.NOT_FOUND
    wrong = await running.client.delete("/v1/count")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["code"] == code_pb2.UNIMPLEMENTED


async def test_unannotated_methods_are_not_reachable_over_rest(running: Running) -> None:
    r = await running.client.post("/edgetest.v1.EdgeTestService/Hidden", content=b"")
    assert r.status_code == 404
