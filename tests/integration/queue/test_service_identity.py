"""The queue over mTLS, attacked as the security review did: no certificate, a foreign CA, the wrong
service identity, a router that holds no lease. Each is refused with the right code and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue.service import QueueService
from aigw_server.runtime.authz import POLICY, MeshTls
from aigw_server.runtime.channels import make_channel
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import FailedPrecondition, PermissionDenied
from aigw_server.runtime.pki import ensure_mesh_pki
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.server import create_server
from tests.integration.queue.conftest import CHAT

pytestmark = pytest.mark.timeout(60)


class SecureQueue:
    """A queue service on an mTLS port, and channels to it as any identity of a given CA."""

    def __init__(self, address: str, pki: Path) -> None:
        self.address = address
        self.pki = pki
        self.channels: list[grpc.aio.Channel] = []

    def channel(self, identity: str, pki: Path | None = None) -> grpc.aio.Channel:
        channel = make_channel(self.address, MeshTls.load(pki or self.pki, identity), "queue")
        self.channels.append(channel)
        return channel

    def jobs(self, identity: str) -> queue_pb2_grpc.QueueServiceAsyncStub:
        return queue_pb2_grpc.QueueServiceStub(self.channel(identity))

    def identities(self, identity: str) -> queue_pb2_grpc.IdentityServiceAsyncStub:
        return queue_pb2_grpc.IdentityServiceStub(self.channel(identity))


@pytest.fixture
async def secure(make_queue: Callable[..., GatewayConfig], tmp_path: Path) -> AsyncIterator[SecureQueue]:
    pki = ensure_mesh_pki(tmp_path / "pki")
    service = QueueService(make_queue())
    server, port, health = await create_server(service, "127.0.0.1:0", MeshTls.load(pki, "queue"))
    await server.start()
    await service.start(health)
    await service.wait_ready(30)
    queue = SecureQueue(f"127.0.0.1:{port}", pki)
    try:
        yield queue
    finally:
        for channel in queue.channels:
            await channel.close(None)
        await server.stop(0)
        await service.stop()


def chat_submit(text: str = "hello") -> queue_pb2.SubmitRequest:
    chat = common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content=text)])
    return queue_pb2.SubmitRequest(model=CHAT, chat=chat, owner_id="alice")


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_a_caller_without_a_certificate_cannot_even_connect(secure: SecureQueue) -> None:
    async with grpc.aio.insecure_channel(secure.address) as plain:
        stub = queue_pb2_grpc.IdentityServiceStub(plain)
        assert await code_of(stub.ListUsers(queue_pb2.ListUsersRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the server but presents no client certificate: the handshake is refused.
    ca = (secure.pki / "ca.crt").read_bytes()
    options = [("grpc.ssl_target_name_override", "queue")]
    async with grpc.aio.secure_channel(secure.address, grpc.ssl_channel_credentials(ca), options=options) as anonymous:
        stub = queue_pb2_grpc.IdentityServiceStub(anonymous)
        assert await code_of(stub.ListUsers(queue_pb2.ListUsersRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(secure: SecureQueue, tmp_path: Path) -> None:
    foreign = ensure_mesh_pki(tmp_path / "foreign")
    stub = queue_pb2_grpc.IdentityServiceStub(secure.channel("admin", foreign))
    assert await code_of(stub.ListUsers(queue_pb2.ListUsersRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE


async def test_the_router_may_not_write_identities_or_read_users(secure: SecureQueue) -> None:
    as_router = secure.identities("router")
    key = queue_pb2.ApiKey(key_id="k1", subject="mallory", role="admin", secret_hash="0" * 64)
    assert await code_of(as_router.CreateApiKey(queue_pb2.CreateApiKeyRequest(key=key))) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(as_router.ListUsers(queue_pb2.ListUsersRequest())) == grpc.StatusCode.PERMISSION_DENIED
    listed = await secure.identities("admin").ListApiKeys(queue_pb2.ListApiKeysRequest())
    assert not listed.keys, "the refused call stored a key"


@pytest.mark.parametrize("identity", ["textgen", "ocr", "edge", "probe"])
async def test_only_the_router_submits_and_runs_jobs(secure: SecureQueue, identity: str) -> None:
    stub = secure.jobs(identity)
    assert await code_of(stub.Submit(chat_submit())) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.AcquireJob(queue_pb2.AcquireJobRequest(worker_id="w", wait_ms=0))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_router_cannot_complete_a_job_whose_lease_it_does_not_hold(secure: SecureQueue) -> None:
    router = secure.jobs("router")
    submitted = await router.Submit(chat_submit())
    granted = await router.AcquireJob(queue_pb2.AcquireJobRequest(worker_id="w1", wait_ms=2000))
    assert granted.job.request_id == submitted.job.request_id
    forged = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="forged"), finish_reason="stop")
    other = secure.jobs("router")
    complete = other.CompleteJob(
        queue_pb2.CompleteJobRequest(lease_id="0" * 32, request_id=submitted.job.request_id, backend="b", chat_result=forged)
    )
    assert await code_of(complete) == grpc.StatusCode.FAILED_PRECONDITION
    job = (await router.GetJob(queue_pb2.GetJobRequest(request_id=submitted.job.request_id, include_payload=True))).job
    assert job.state == common_pb2.RUNNING


async def test_a_refused_call_answers_the_callers_request_id_in_its_trailing_metadata(secure: SecureQueue) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await secure.jobs("textgen").Submit(chat_submit(), metadata=(("x-request-id", "refused-call-1"),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ("x-request-id", "refused-call-1") in tuple(cast("grpc.aio.Metadata", caught.value.trailing_metadata()))


async def test_a_probe_reads_health_and_nothing_else(secure: SecureQueue) -> None:
    channel = secure.channel("probe")
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = queue_pb2_grpc.QueueServiceStub(channel)
    assert await code_of(stub.GetJob(queue_pb2.GetJobRequest(request_id="x"))) == grpc.StatusCode.PERMISSION_DENIED


def test_session_batches_is_allowed_to_exactly_the_callers_of_session() -> None:
    session = "/aigw.queue.v1.QueueService/Session"
    assert POLICY[f"{session}Batches"] == POLICY[session] == {"router"}


@pytest.mark.parametrize("identity", ["admin", "textgen", "ocr", "edge", "probe"])
async def test_only_the_router_opens_a_session_and_a_refused_one_changes_nothing(secure: SecureQueue, identity: str) -> None:
    stream = secure.jobs(identity).Session(iter([queue_pb2.SessionRequest(call_id=1, submit=chat_submit())]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    batch = queue_pb2.SessionBatchesRequest(calls=[queue_pb2.SessionRequest(call_id=1, submit=chat_submit())])
    batches = secure.jobs(identity).SessionBatches(iter([batch]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in batches:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call aigw.queue.v1.QueueService/SessionBatches" in str(caught.value.details())
    queue = QueueClient.connect(secure.address, MeshTls.load(secure.pki, identity))
    try:
        with pytest.raises(PermissionDenied, match=r"may not call aigw\.queue\.v1\.QueueService/SessionBatches"):
            await queue.submit(chat_submit())
    finally:
        await queue.close()
    listed = await secure.jobs("admin").ListJobs(queue_pb2.ListJobsRequest(model=CHAT))
    assert not listed.jobs, "a refused session stored a job"


async def test_a_router_session_is_held_to_the_lease_checks_of_each_call(secure: SecureQueue) -> None:
    router = QueueClient.connect(secure.address, MeshTls.load(secure.pki, "router"))
    other = QueueClient.connect(secure.address, MeshTls.load(secure.pki, "router"))
    try:
        submitted = await router.submit(chat_submit())
        granted = await router.acquire("w1", 2000, models=[CHAT])
        assert granted is not None
        assert granted.job.request_id == submitted.job.request_id
        forged = common_pb2.ChatResult(message=common_pb2.ChatMessage(role="assistant", content="forged"), finish_reason="stop")
        complete = queue_pb2.CompleteJobRequest(
            lease_id="0" * 32, request_id=submitted.job.request_id, backend="b", chat_result=forged
        )
        with pytest.raises(FailedPrecondition):
            await other.complete(complete)
        assert (await router.get(submitted.job.request_id)).state == common_pb2.RUNNING
        assert router.session is not None  # both went over their sessions, several calls per message
        assert other.session is not None
        assert router.session.batches
        assert other.session.batches
    finally:
        await router.close()
        await other.close()
