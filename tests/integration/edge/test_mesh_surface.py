"""The edge built from the config and the real descriptor set, in front of stand-in router and admin servicers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from google.rpc import code_pb2

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.edge.service import build
from aigw_server.runtime.config import parse_config


class StandInRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers health and OpenAI-style completions the way the router's contract describes them."""

    async def GetHealth(self, request: Any, context: Any) -> Any:
        return router_pb2.GetHealthResponse(status="ok", version="test")

    async def CreateChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        body = json.loads(request.data)
        if not body.get("stream"):
            # One JSON body: its request id with the end of the call, as for a unary answer.
            context.set_trailing_metadata((("x-request-id", "stored-1"),))
            yield httpbody_pb2.HttpBody(content_type="application/json", data=b'{"object":')
            yield httpbody_pb2.HttpBody(content_type="application/json", data=b'"chat.completion"}')
            if body.get("model") == "fails-late":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "model full")
            return
        await context.send_initial_metadata((("x-request-id", "stored-2"),))
        for word in ("Hel", "lo"):
            chunk = json.dumps({"object": "chat.completion.chunk", "choices": [{"delta": {"content": word}}]})
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=f"data: {chunk}\n\n".encode())
        yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=b"data: [DONE]\n\n")


class StandInAdmin(admin_pb2_grpc.AdminServiceServicer):
    """Issues a "token" that shows what the form field received."""

    async def IssueToken(self, request: Any, context: Any) -> Any:
        return admin_pb2.IssueTokenResponse(access_token=request.form.data.decode(), token_type=request.form.content_type)


@pytest.fixture
async def mesh_client() -> AsyncIterator[httpx.AsyncClient]:
    router, admin = grpc.aio.server(), grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(StandInRouter(), router)  # type: ignore[abstract]
    admin_pb2_grpc.add_AdminServiceServicer_to_server(StandInAdmin(), admin)  # type: ignore[abstract]
    ports = {name: {"port": server.add_insecure_port("127.0.0.1:0")} for name, server in (("router", router), ("admin", admin))}
    await router.start()
    await admin.start()
    edge = build(parse_config({"services": ports, "mesh_tls": {"mode": "plaintext"}}, env={}))
    edge_port = await edge.start("127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge_port}", timeout=10) as client:
        yield client
    await edge.stop(0)
    await router.stop(0)
    await admin.stop(0)


async def test_health_is_transcoded_to_the_router(mesh_client: httpx.AsyncClient) -> None:
    r = await mesh_client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "components": {}, "version": "test"}


async def test_token_form_reaches_the_admin_raw(mesh_client: httpx.AsyncClient) -> None:
    r = await mesh_client.post("/auth/token", data={"username": "admin", "password": "s3cret"})
    body = r.json()
    assert (body["access_token"], body["token_type"]) == ("username=admin&password=s3cret", "application/x-www-form-urlencoded")


async def test_token_json_reaches_the_admin_raw(mesh_client: httpx.AsyncClient) -> None:
    r = await mesh_client.post("/auth/token", json={"username": "admin", "password": "s3cret"})
    assert r.json()["token_type"] == "application/json"
    assert json.loads(r.json()["access_token"]) == {"username": "admin", "password": "s3cret"}


async def test_openai_completion_unary_is_plain_json_answered_whole_with_its_trailing_request_id(
    mesh_client: httpx.AsyncClient,
) -> None:
    r = await mesh_client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(b'{"object":"chat.completion"}'))  # whole, not chunked
    assert "transfer-encoding" not in r.headers
    assert r.headers.get_list("x-request-id") == ["stored-1"]
    assert r.json() == {"object": "chat.completion"}


async def test_an_error_before_a_json_answer_ends_is_answered_with_its_status(mesh_client: httpx.AsyncClient) -> None:
    r = await mesh_client.post("/v1/chat/completions", json={"model": "fails-late", "messages": []})
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "model full"


async def test_openai_completion_stream_is_the_rpcs_own_sse(mesh_client: httpx.AsyncClient) -> None:
    async with mesh_client.stream("POST", "/v1/chat/completions", json={"model": "m", "stream": True}) as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers.get_list("x-request-id") == ["stored-2"]  # a stream's, from its initial metadata
        text = (await r.aread()).decode()
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "Hello"


async def test_unimplemented_rpcs_answer_501_with_a_status(mesh_client: httpx.AsyncClient) -> None:
    r = await mesh_client.get("/admin/models")
    assert r.status_code == 501
    assert r.json()["code"] == code_pb2.UNIMPLEMENTED
