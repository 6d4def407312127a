"""Through real servers: a backend killed mid-request hands the job to another; load decides where work goes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import MODEL, bearer, mesh_on, textgen_backend, upstreams, wait_until

pytestmark = pytest.mark.timeout(120)
ANSWER = "Hello from the fast upstream."


def chat() -> router_pb2.ChatRequest:
    return router_pb2.ChatRequest(model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="hi")])


async def test_a_backend_killed_mid_request_leaves_the_job_to_another(ferretdb: FerretDBProcess, tmp_path: Path) -> None:
    slow = ("--delay-ms", "1500")
    with upstreams(slow, slow) as (up_a, up_b):
        backends = [textgen_backend("tg-a", up_a), textgen_backend("tg-b", up_b)]
        async with mesh_on(ferretdb, tmp_path, backends) as mesh:
            call = asyncio.ensure_future(mesh.router.Chat(chat(), metadata=bearer(mesh.token())))
            busy: list[str] = []

            def one_is_busy() -> bool:
                busy[:] = [name for name, up in (("tg-a", up_a), ("tg-b", up_b)) if up.stats()["in_flight"]]
                return bool(busy)

            await wait_until(one_is_busy, timeout=10, what="the request reached an upstream")
            (up_a if busy == ["tg-a"] else up_b).kill()
            reply = await asyncio.wait_for(call, 30)
            assert reply.status == common_pb2.SUCCEEDED
            assert reply.response == ANSWER
            lookup = router_pb2.GetRequestRequest(request_id=reply.request_id)
            job = (await mesh.router.GetRequest(lookup, metadata=bearer(mesh.token()))).request
            survivor = "tg-b" if busy == ["tg-a"] else "tg-a"
            assert job.backend == survivor
            assert job.attempt == 2
            assert [(e.backend, e.code) for e in job.attempt_errors] == [(busy[0], "UNAVAILABLE")]


async def test_the_busier_backend_gets_a_bounded_share(ferretdb: FerretDBProcess, tmp_path: Path) -> None:
    long_streams = ("--tokens", "400", "--chunk-delay-ms", "50")
    with upstreams((), long_streams) as (idle_up, busy_up):
        backends = [textgen_backend("tg-idle", idle_up), textgen_backend("tg-busy", busy_up)]
        async with (
            mesh_on(ferretdb, tmp_path, backends, routing={"policy": "least_loaded"}) as mesh,
            grpc.aio.insecure_channel(mesh.cfg.backend("tg-busy").address) as channel,
        ):
            textgen = textgen_pb2_grpc.TextgenServiceStub(channel)
            job = common_pb2.ChatJob(
                messages=[common_pb2.ChatMessage(role="user", content="long")], params=common_pb2.GenerationParams(max_tokens=400)
            )
            held = [textgen.StreamGenerate(textgen_pb2.StreamGenerateRequest(model=MODEL, chat=job)) for _ in range(6)]
            for stream in held:
                await stream.read()
            view = mesh.router_service.pool.views["tg-busy"]
            await wait_until(lambda: view.in_flight >= 6, timeout=5, what="the router sees the busy backend's load")
            ups = {"tg-idle": idle_up, "tg-busy": busy_up}
            before = {name: up.stats()["requests"] for name, up in ups.items()}
            replies = []
            for _ in range(4):
                replies += await asyncio.gather(*(mesh.router.Chat(chat(), metadata=bearer(mesh.token())) for _ in range(5)))
            assert all(r.response == ANSWER for r in replies)
            counts = {name: up.stats()["requests"] - before[name] for name, up in ups.items()}
            for stream in held:
                stream.cancel()
    assert sum(counts.values()) == 20
    assert counts["tg-busy"] <= 2, counts


async def test_a_queue_restart_mid_request_loses_nothing(ferretdb: FerretDBProcess, tmp_path: Path) -> None:
    with upstreams(("--delay-ms", "1500")) as (up,):
        # A lease longer than the outage (the harness's 1.5 s TTL is shorter than stop + restart on a busy
        # machine): what is tested is that a queue restart within the lease neither loses nor re-runs the job.
        lease = {"lease_ttl_seconds": 6, "orphan_grace_seconds": 1.0, "sweep_interval_seconds": 0.2}
        async with mesh_on(ferretdb, tmp_path, [textgen_backend("tg-0", up)], queue=lease) as mesh:
            call = asyncio.ensure_future(mesh.router.Chat(chat(), metadata=bearer(mesh.token())))
            await wait_until(lambda: up.stats()["in_flight"] == 1, timeout=10, what="the request reached the upstream")
            await mesh.queue.stop()
            await wait_until(lambda: up.stats()["completed"] == 1, timeout=10, what="the upstream answered")
            await asyncio.sleep(0.3)
            await mesh.queue.start()
            reply = await asyncio.wait_for(call, 30)
            assert reply.status == common_pb2.SUCCEEDED
            assert reply.response == ANSWER
            lookup = router_pb2.GetRequestRequest(request_id=reply.request_id)
            job = (await mesh.router.GetRequest(lookup, metadata=bearer(mesh.token()))).request
            assert (job.state, job.attempt, job.chat_result.message.content) == (common_pb2.SUCCEEDED, 1, ANSWER)
