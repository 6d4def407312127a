"""Through real servers: the router calls HTTP engines directly, textgen only tells it where they are."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_server.router.service import RouterService
from aigw_server.runtime.auth import TokenSigner
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.router.harness import (
    MODEL,
    SECRET,
    USERS,
    Mesh,
    QueueProcess,
    Upstream,
    bearer,
    create_users,
    mesh_config,
    mesh_on,
    own_database,
    serving,
    textgen_backend,
    upstreams,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
ANSWER = "Hello from the fast upstream."
KEY_VAR = "AIGW_TEST_ENGINE_KEY"


def generate_rpcs() -> float:
    """TextgenService Generate and StreamGenerate calls served in this process so far."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "aigw_rpc_requests_total" and sample.labels.get("method") in ("Generate", "StreamGenerate"):
                total += sample.value
    return total


def chat(max_tokens: int | None = None) -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(
        model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="hi")], max_tokens=max_tokens
    )


async def answers(mesh: Mesh) -> list[str]:
    """One unary and one streamed chat through the router."""
    unary = await mesh.router.Chat(chat(), metadata=bearer(mesh.token()))
    stream_chat = router_pb2.StreamChatRequest(model=MODEL, messages=chat().messages)
    streamed = [r async for r in mesh.router.StreamChat(stream_chat, metadata=bearer(mesh.token()))]
    return [unary.response, "".join(r.delta for r in streamed)]


@pytest.mark.parametrize("direct", [True, False])
async def test_chat_skips_textgen_when_direct(ferretdb: FerretDBProcess, tmp_path: Path, direct: bool) -> None:
    with upstreams(()) as (up,):
        async with mesh_on(ferretdb, tmp_path, [textgen_backend("tg-a", up)], routing={"direct_engines": direct}) as mesh:
            before_rpcs, before_upstream = generate_rpcs(), up.stats()["requests"]
            assert await answers(mesh) == [ANSWER, ANSWER]
            assert up.stats()["requests"] - before_upstream == 2
            assert generate_rpcs() - before_rpcs == (0 if direct else 2)


async def test_an_engine_4xx_fails_the_job_once(ferretdb: FerretDBProcess, tmp_path: Path) -> None:
    with upstreams(("--max-tokens-limit", "8"), ("--max-tokens-limit", "8")) as (up_a, up_b):
        backends = [textgen_backend("tg-a", up_a), textgen_backend("tg-b", up_b)]
        async with mesh_on(ferretdb, tmp_path, backends) as mesh:
            before_rpcs = generate_rpcs()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mesh.router.Chat(chat(max_tokens=20), metadata=bearer(mesh.token()))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "max_tokens must be at most 8" in (err.value.details() or "")
            assert up_a.stats()["rejected"] + up_b.stats()["rejected"] == 1  # not retried, nor on the other engine
            assert generate_rpcs() == before_rpcs
            reply = await mesh.router.Chat(chat(max_tokens=4), metadata=bearer(mesh.token()))
            assert reply.status == common_pb2.SUCCEEDED


async def test_a_keyed_engine_refuses_callers_without_its_key(
    ferretdb: FerretDBProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "k-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_VAR, key)
    with upstreams(("--api-key-env", KEY_VAR)) as (up,):
        backend = {**textgen_backend("tg-a", up), "api_key_env": KEY_VAR}
        async with mesh_on(ferretdb, tmp_path, [backend]) as mesh:
            assert await answers(mesh) == [ANSWER, ANSWER]
            assert up.stats()["refused"] == 0
            # The router learns the key from GetEngines only; the status everyone else reads does not hold it.
            async with grpc.aio.insecure_channel(mesh.cfg.backend("tg-a").address) as channel:
                stub = backend_pb2_grpc.BackendServiceStub(channel)
                status = await stub.GetStatus(backend_pb2.GetStatusRequest())
                assert key not in str(status)
                engines = await stub.GetEngines(backend_pb2.GetEnginesRequest())
                assert [e.api_key for e in engines.engines] == [key]
        async with httpx.AsyncClient() as attacker:
            reply = await attacker.post(f"{up.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
            assert reply.status_code == 401
            wrong = {"authorization": "Bearer not-the-key"}
            reply = await attacker.post(f"{up.url}/v1/chat/completions", json={"model": MODEL, "messages": []}, headers=wrong)
            assert reply.status_code == 401
        assert up.stats()["refused"] == 2
    assert caplog.records
    assert key not in caplog.text


async def test_an_engine_killed_mid_request_leaves_the_job_to_another_without_textgen(
    ferretdb: FerretDBProcess, tmp_path: Path
) -> None:
    slow = ("--delay-ms", "1500")
    with upstreams(slow, slow) as (up_a, up_b):
        backends = [textgen_backend("tg-a", up_a), textgen_backend("tg-b", up_b)]
        async with mesh_on(ferretdb, tmp_path, backends) as mesh:
            before_rpcs = generate_rpcs()
            call = asyncio.ensure_future(mesh.router.Chat(chat(), metadata=bearer(mesh.token())))
            busy: list[Upstream] = []

            def one_is_busy() -> bool:
                busy[:] = [up for up in (up_a, up_b) if up.stats()["in_flight"]]
                return bool(busy)

            await wait_until(one_is_busy, timeout=10, what="the request reached an engine")
            busy[0].kill()
            reply = await asyncio.wait_for(call, 30)
            assert reply.status == common_pb2.SUCCEEDED
            assert reply.response == ANSWER
            job = (
                await mesh.router.GetRequest(
                    router_pb2.GetRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token())
                )
            ).request
            assert job.attempt == 2
            assert [e.code for e in job.attempt_errors] == ["UNAVAILABLE"]
            assert generate_rpcs() == before_rpcs


async def test_the_router_calls_the_advertised_engine_while_textgen_probes_its_own_url(
    ferretdb: FerretDBProcess, tmp_path: Path
) -> None:
    """As a textgen pod that reaches vLLM on loopback and advertises the pod's IP: two servers make the two
    addresses tell apart. Chats go to the advertised one; health and lifecycle stay on textgen's own."""
    with upstreams((), ()) as (own, advertised):
        backend = {**textgen_backend("tg-a", own), "advertise_url": f"{advertised.url}/v1"}
        async with mesh_on(ferretdb, tmp_path, [backend]) as mesh:
            before_rpcs = generate_rpcs()
            assert await answers(mesh) == [ANSWER, ANSWER]
            assert (advertised.stats()["requests"], own.stats()["requests"]) == (2, 0)
            assert generate_rpcs() == before_rpcs
            async with grpc.aio.insecure_channel(mesh.cfg.backend("tg-a").address) as channel:
                stub = backend_pb2_grpc.BackendServiceStub(channel)
                engines = await stub.GetEngines(backend_pb2.GetEnginesRequest())
                assert [e.base_url for e in engines.engines] == [advertised.url]

                # textgen's health checks go to its own URL: that server gone, the backend stops serving.
                own.kill()

                async def crashed() -> bool:
                    status = await stub.GetStatus(backend_pb2.GetStatusRequest())
                    return status.status.state != common_pb2.BACKEND_STATE_READY

                deadline = asyncio.get_running_loop().time() + 30
                while not await crashed():
                    assert asyncio.get_running_loop().time() < deadline, "textgen kept probing the advertised engine"
                    await asyncio.sleep(0.1)


async def test_a_textgen_replaced_at_a_new_engine_address_is_followed(ferretdb: FerretDBProcess, tmp_path: Path) -> None:
    """A pod replaced under the same name: same backend address, same status, its engine at a new IP. The
    router drops the gone engine when the backend stops answering and calls the new one once it is back."""
    with upstreams((), ()) as (old, new):
        cfg = mesh_config(ferretdb.uri, own_database(), tmp_path, [{**textgen_backend("tg-a", old), "advertise_url": old.url}])
        backend = cfg.backends[0]
        replaced = replace(cfg, backends=(replace(backend, url=new.url, advertise_url=new.url),))
        queue = QueueProcess(cfg)
        await queue.start()
        try:
            await create_users(cfg.services.queue.address, USERS)
            router = RouterService(cfg)
            port = free_port()
            async with serving(router, f"127.0.0.1:{port}", until_serving=False):
                token, _ = TokenSigner(cfg.auth, SECRET).issue_access("alice", "user", ())
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = router_pb2_grpc.RouterServiceStub(channel)
                    async with serving(build_textgen(cfg, {"AIGW_BACKEND": "tg-a"}), backend.address):
                        await wait_until(lambda: MODEL in router.pool.servable_models(), what="the first textgen")
                        assert (await stub.Chat(chat(), metadata=bearer(token))).response == ANSWER
                    await wait_until(lambda: MODEL not in router.pool.servable_models(), what="the router saw it go")
                    async with serving(build_textgen(replaced, {"AIGW_BACKEND": "tg-a"}), backend.address):
                        await wait_until(lambda: MODEL in router.pool.servable_models(), what="the new textgen")
                        before_rpcs = generate_rpcs()
                        assert (await stub.Chat(chat(), metadata=bearer(token))).response == ANSWER
                        assert generate_rpcs() == before_rpcs, "called directly"
            assert (old.stats()["requests"], new.stats()["requests"]) == (1, 1)
        finally:
            await queue.stop()
