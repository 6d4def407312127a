"""Through real servers: every credential failure, the X-Client-ID rule, rate limits, validation, visibility, models."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import jwt
import orjson
import pytest
import pytest_asyncio
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2
from aigw_server.admin.service import build as build_admin
from aigw_server.runtime.auth import hash_secret, new_api_key
from aigw_server.runtime.rpc_errors import retry_after_of
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import (
    MODEL,
    Mesh,
    Upstream,
    bearer,
    create_users,
    forged,
    mesh_on,
    serving,
    textgen_backend,
    upstreams,
    wait_health,
    wait_until,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
ANSWER = "Hello from the fast upstream."


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with upstreams(()) as (up,):
        yield up


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(ferretdb: FerretDBProcess, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    rate_limit = {"default": {"requests_per_minute": 60, "burst": 60}}
    async with mesh_on(
        ferretdb, tmp_path_factory.mktemp("router-access"), [textgen_backend("tg-0", upstream)], rate_limit=rate_limit
    ) as running:
        yield running


def chat(**fields: Any) -> router_pb2.ChatRequest:
    base: dict[str, Any] = {"model": MODEL, "messages": [common_pb2.ChatMessage(role="user", content="hi")]}
    return router_pb2.ChatRequest(**{**base, **fields})


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def unsigned(**claims: Any) -> str:
    """A token with `alg: none` (no signature)."""
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    now = int(time.time())
    body = {"sub": "alice", "role": "admin", "iss": "aigw", "aud": "aigw", "iat": now, "exp": now + 300, **claims}
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}."


async def api_key(mesh: Mesh, subject: str) -> tuple[str, str]:
    """A user and an API key for them, stored through the queue's IdentityService; returns (key_id, full key)."""
    user = queue_pb2.User(username=subject, role="user", password_hash="unused", allowed_client_ids=["batch-1"])
    await mesh.identity.CreateUser(queue_pb2.CreateUserRequest(user=user))
    key_id, secret, full = new_api_key()
    record = queue_pb2.ApiKey(key_id=key_id, secret_hash=hash_secret(secret), subject=subject, role="user", name="test")
    await mesh.identity.CreateApiKey(queue_pb2.CreateApiKeyRequest(key=record))
    return key_id, full


def now() -> int:
    """Seconds now, read when a case's credential is made (cases are collected long before some run)."""
    return int(time.time())


CREDENTIALS: list[tuple[str, Callable[[Mesh], tuple[tuple[str, str], ...]], grpc.StatusCode]] = [
    ("missing", lambda m: (), grpc.StatusCode.UNAUTHENTICATED),
    ("not bearer", lambda m: (("authorization", "Token abc"),), grpc.StatusCode.UNAUTHENTICATED),
    ("malformed", lambda m: bearer("abc.def"), grpc.StatusCode.UNAUTHENTICATED),
    (
        "bad signature",
        lambda m: bearer(jwt.encode({"sub": "alice"}, "another-secret-" + "x" * 40, "HS256")),
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    ("alg none", lambda m: bearer(unsigned()), grpc.StatusCode.UNAUTHENTICATED),
    ("expired", lambda m: bearer(forged(iat=now() - 600, nbf=now() - 600, exp=now() - 300)), grpc.StatusCode.UNAUTHENTICATED),
    ("not yet valid", lambda m: bearer(forged(nbf=now() + 600)), grpc.StatusCode.UNAUTHENTICATED),
    ("wrong issuer", lambda m: bearer(forged(iss="someone-else")), grpc.StatusCode.UNAUTHENTICATED),
    ("wrong audience", lambda m: bearer(forged(aud="another-api")), grpc.StatusCode.UNAUTHENTICATED),
    ("no role", lambda m: bearer(forged(role=None)), grpc.StatusCode.UNAUTHENTICATED),
    ("unknown API key", lambda m: (("x-api-key", new_api_key()[2]),), grpc.StatusCode.UNAUTHENTICATED),
    ("wrong role", lambda m: bearer(forged(role="viewer")), grpc.StatusCode.PERMISSION_DENIED),
    ("client not allowed", lambda m: bearer(m.token("alice"), x_client_id="bobs-app"), grpc.StatusCode.PERMISSION_DENIED),
    ("valid", lambda m: bearer(m.token("alice")), grpc.StatusCode.OK),
    ("allowed client", lambda m: bearer(m.token("alice", client_ids=("app-1",)), x_client_id="app-1"), grpc.StatusCode.OK),
    ("admin for anyone", lambda m: bearer(m.token("root", "admin"), x_client_id="anyone"), grpc.StatusCode.OK),
]


@pytest.mark.parametrize(("case", "metadata", "code"), CREDENTIALS, ids=[c[0] for c in CREDENTIALS])
async def test_credentials_give_the_right_code(
    mesh: Mesh, case: str, metadata: Callable[[Mesh], tuple[tuple[str, str], ...]], code: grpc.StatusCode
) -> None:
    assert await code_of(mesh.router.Chat(chat(), metadata=metadata(mesh))) == code
    assert await code_of(mesh.router.ListModels(router_pb2.ListModelsRequest(), metadata=metadata(mesh))) == code


async def health(mesh: Mesh) -> tuple[grpc.StatusCode, Any]:  # Any: the answer, or the error's message
    """GetHealth's code and its answer (or its error's message), with no credential."""
    try:
        return grpc.StatusCode.OK, await mesh.router.GetHealth(router_pb2.GetHealthRequest())
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


async def test_health_is_readiness_and_needs_no_credential(mesh: Mesh) -> None:
    code, message = await health(mesh)
    assert code == grpc.StatusCode.UNAVAILABLE, "not ready while nobody can issue tokens"
    assert "admin unreachable" in message
    assert "queue" not in message
    async with serving(build_admin(mesh.cfg), mesh.cfg.services.admin.address):
        await wait_until(lambda: mesh.router_service.poller.admin_state == "serving", what="admin seen serving")
        code, reply = await health(mesh)
        assert code == grpc.StatusCode.OK
        assert reply.status == "ok"
        assert dict(reply.components) == {"queue": "serving", "admin": "serving", "textgen:tg-0": "serving"}


ROUTER_SERVICE = "aigw.router.v1.RouterService"
QUEUE_NOTICED_SECONDS = 30.0
"""The router calls the queue unreachable when it has not answered for three config refreshes (9 s)."""


async def test_grpc_health_follows_readiness_while_the_queue_stops_and_comes_back(mesh: Mesh) -> None:
    """The standard health status (the Kubernetes readiness probe) is the same assessment as GetHealth."""
    for service in ("", ROUTER_SERVICE):
        await wait_health(mesh.router_address, "NOT_SERVING", service, what="router without admin")
    async with serving(build_admin(mesh.cfg), mesh.cfg.services.admin.address):
        for service in ("", ROUTER_SERVICE):
            await wait_health(mesh.router_address, "SERVING", service, what="router with admin")
        await mesh.queue.stop()
        try:
            await wait_health(mesh.router_address, "NOT_SERVING", ROUTER_SERVICE, QUEUE_NOTICED_SECONDS, "router, queue down")
            await wait_health(mesh.router_address, "NOT_SERVING", "", timeout=0, what="router, queue down")
            code, message = await health(mesh)
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "queue unreachable" in message
        finally:
            await mesh.queue.start()
        for service in (ROUTER_SERVICE, ""):
            await wait_health(mesh.router_address, "SERVING", service, QUEUE_NOTICED_SECONDS, "router, queue back")
        code, _ = await health(mesh)
        assert code == grpc.StatusCode.OK
        reply = await mesh.router.Chat(chat(), metadata=bearer(mesh.token("alice")))
        assert reply.response == ANSWER
    await wait_health(mesh.router_address, "NOT_SERVING", ROUTER_SERVICE, what="router after admin left")


async def test_api_keys_work_in_both_headers_until_revoked(mesh: Mesh) -> None:
    _, key = await api_key(mesh, "carol")
    for metadata in ((("x-api-key", key),), bearer(key), (("x-api-key", key), ("x-client-id", "batch-1"))):
        reply = await mesh.router.Chat(chat(), metadata=metadata)
        assert reply.response == ANSWER
    revoked_id, revoked = await api_key(mesh, "dave")
    await mesh.identity.RevokeApiKey(queue_pb2.RevokeApiKeyRequest(key_id=revoked_id))
    assert await code_of(mesh.router.Chat(chat(), metadata=(("x-api-key", revoked),))) == grpc.StatusCode.UNAUTHENTICATED


async def test_the_61st_request_in_a_minute_is_limited_and_another_client_is_not(mesh: Mesh) -> None:
    flood = bearer(mesh.token("flood"))
    started = time.monotonic()
    accepted = await asyncio.gather(*(mesh.router.Chat(chat(async_mode=True), metadata=flood) for _ in range(60)))
    assert all(r.request_id and r.status in (common_pb2.QUEUED, common_pb2.RUNNING, common_pb2.SUCCEEDED) for r in accepted)
    # The bucket refills one request a second: on a loaded machine the burst may take longer than that, so a
    # request per second elapsed may still get in before the refusal; never more.
    extra = 0
    while True:
        try:
            await mesh.router.Chat(chat(async_mode=True), metadata=flood)
        except grpc.aio.AioRpcError as exc:
            refused = exc
            break
        extra += 1
        assert extra <= time.monotonic() - started + 1, "the limiter let through more than its refill allows"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (refused.details() or "")
    retry_after = retry_after_of(refused)
    assert retry_after is not None
    assert 0 < retry_after <= 1.0
    reply = await mesh.router.Chat(chat(priority="high"), metadata=bearer(mesh.token("calm")))
    assert reply.status == common_pb2.SUCCEEDED


def field_of(exc: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # grpcio-status types a sync grpc.Call; aio errors work alike
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    return ""


INVALID: list[tuple[str, router_pb2.ChatRequest, tuple[tuple[str, str], ...], grpc.StatusCode, str]] = [
    ("unknown model", chat(model="nope"), (), grpc.StatusCode.NOT_FOUND, ""),
    ("disabled model", chat(model="chat-off"), (), grpc.StatusCode.FAILED_PRECONDITION, ""),
    ("no messages", chat(messages=[]), (), grpc.StatusCode.INVALID_ARGUMENT, "messages"),
    (
        "bad role",
        chat(messages=[common_pb2.ChatMessage(role="robot", content="x")]),
        (),
        grpc.StatusCode.INVALID_ARGUMENT,
        "messages[0].role",
    ),
    ("temperature", chat(temperature=3.0), (), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    ("top_p", chat(top_p=0.0), (), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    ("max_tokens", chat(max_tokens=0), (), grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
    ("priority field", chat(priority="urgent"), (), grpc.StatusCode.INVALID_ARGUMENT, "priority"),
    ("priority header", chat(), (("x-priority", "ASAP"),), grpc.StatusCode.INVALID_ARGUMENT, "priority"),
]


@pytest.mark.parametrize(("case", "request_", "extra", "code", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_bad_chat_requests_are_refused_and_submit_nothing(
    mesh: Mesh, case: str, request_: router_pb2.ChatRequest, extra: tuple[tuple[str, str], ...], code: grpc.StatusCode, field: str
) -> None:
    client = f"validator-{uuid.uuid4().hex[:6]}"
    await create_users(mesh.cfg.services.queue.address, (client,))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.router.Chat(request_, metadata=bearer(mesh.token(client)) + extra)
    assert refused.value.code() == code
    assert field_of(refused.value) == field
    jobs = await mesh.jobs.ListJobs(queue_pb2.ListJobsRequest(client_id=client))
    assert list(jobs.jobs) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{oops", "body"),
        (orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}), "n"),
        (orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": 7}]}), "messages[0].content"),
        (orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "warm"}), "temperature"),
    ],
)
async def test_bad_openai_bodies_name_the_field(mesh: Mesh, body: bytes, field: str) -> None:
    request = httpbody_pb2.HttpBody(content_type="application/json", data=body)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in mesh.router.CreateChatCompletion(request, metadata=bearer(mesh.token("bob"))):
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(refused.value) == field


async def test_users_see_only_their_own_requests(mesh: Mesh) -> None:
    reply = await mesh.router.Chat(chat(), metadata=bearer(mesh.token("alice")))
    lookup = router_pb2.GetRequestRequest(request_id=reply.request_id)
    own = await mesh.router.GetRequest(lookup, metadata=bearer(mesh.token("alice")))
    assert own.request.state == common_pb2.SUCCEEDED
    assert own.request.chat_result.message.content == ANSWER
    assert not own.request.HasField("chat")  # the body only when asked for
    admin = await mesh.router.GetRequest(lookup, metadata=bearer(mesh.token("root", "admin")))
    assert admin.request.request_id == reply.request_id
    with_body = router_pb2.GetRequestRequest(request_id=reply.request_id, include_payload=True)
    for who in (mesh.token("alice"), mesh.token("root", "admin")):
        shown = await mesh.router.GetRequest(with_body, metadata=bearer(who))
        assert [m.content for m in shown.request.chat.messages] == [m.content for m in chat().messages]
    for call in (
        mesh.router.GetRequest(lookup, metadata=bearer(mesh.token("mallory"))),
        mesh.router.GetRequest(with_body, metadata=bearer(mesh.token("mallory"))),
        mesh.router.CancelRequest(
            router_pb2.CancelRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token("mallory"))
        ),
        mesh.router.GetRequest(router_pb2.GetRequestRequest(request_id="no-such-id"), metadata=bearer(mesh.token("alice"))),
    ):
        assert await code_of(call) == grpc.StatusCode.NOT_FOUND


async def test_list_models_shows_enabled_models_in_openai_form(mesh: Mesh) -> None:
    reply = await mesh.router.ListModels(router_pb2.ListModelsRequest(), metadata=bearer(mesh.token()))
    assert reply.object == "list"
    assert {m.id for m in reply.data} == {MODEL, "chat-unserved", "tess"}
    assert {(m.object, m.owned_by) for m in reply.data} == {("model", "aigw")}


async def test_dynamic_config_applies_without_restart(mesh: Mesh) -> None:
    current = (await mesh.configs.GetModelConfig(queue_pb2.GetModelConfigRequest(model=MODEL))).config
    patch = queue_pb2.ModelConfigPatch(default_params=common_pb2.GenerationParams(max_tokens=2))
    update = queue_pb2.UpdateModelConfigRequest(model=MODEL, expected_version=current.version, patch=patch, updated_by="test")
    await mesh.configs.UpdateModelConfig(update)
    catalog = mesh.router_service.catalog
    await wait_until(lambda: catalog.resolve(MODEL, "chat").defaults.max_tokens == 2, timeout=10, what="new defaults")
    reply = await mesh.router.Chat(chat(), metadata=bearer(mesh.token()))
    assert reply.response == "Hello from"
    assert reply.finish_reason == "length"
    explicit = await mesh.router.Chat(chat(max_tokens=3), metadata=bearer(mesh.token()))
    assert explicit.response == "Hello from the"


async def test_unserved_model_fails_clearly_when_no_backend_holds_it(mesh: Mesh) -> None:
    mesh.router_service.runner.no_backend_wait = 0.3
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.router.Chat(chat(model="chat-unserved"), metadata=bearer(mesh.token()))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no healthy backend holds model 'chat-unserved'" in (refused.value.details() or "")
