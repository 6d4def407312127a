"""The shared queue client against small in-process queue services: typed answers, its timeout, errors as domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.runtime.auth import Account, Principal
from aigw_server.runtime.errors import PermissionDenied, Unauthenticated
from aigw_server.runtime.queue_client import QueueClient
from aigw_server.runtime.usage import UsageCount

pytestmark = pytest.mark.timeout(30)

USERS = {
    "alice": queue_pb2.User(username="alice", role="admin", allowed_client_ids=["app-1"]),
    "bob": queue_pb2.User(username="bob", role="user", disabled=True),
}
KEYS = {("k1", "h1"): queue_pb2.ApiKey(key_id="k1", subject="alice", role="admin")}


class Identity(queue_pb2_grpc.IdentityServiceServicer):
    """Users and API keys from the tables above; the deadline each call arrived with."""

    def __init__(self) -> None:
        self.time_left: list[float] = []

    async def GetUser(self, request: queue_pb2.GetUserRequest, context: Any) -> queue_pb2.GetUserResponse:
        self.time_left.append(context.time_remaining())
        if request.username not in USERS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no user {request.username!r}")
        return queue_pb2.GetUserResponse(user=USERS[request.username])

    async def LookupApiKey(self, request: queue_pb2.LookupApiKeyRequest, context: Any) -> queue_pb2.LookupApiKeyResponse:
        key = KEYS.get((request.key_id, request.secret_hash))
        if key is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such key")
        return queue_pb2.LookupApiKeyResponse(key=key)

    async def ListUsers(self, request: queue_pb2.ListUsersRequest, context: Any) -> queue_pb2.ListUsersResponse:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "service 'router' may not call ListUsers")
        raise AssertionError("unreachable")


class Jobs(queue_pb2_grpc.QueueServiceServicer):
    """Usage and queue statistics."""

    async def GetUsage(self, request: queue_pb2.GetUsageRequest, context: Any) -> queue_pb2.GetUsageResponse:
        buckets = [queue_pb2.UsageBucket(model="chat", hour_of_week=h, count=request.window_days * h) for h in (1, 2)]
        return queue_pb2.GetUsageResponse(buckets=buckets)

    async def GetQueueStats(self, request: queue_pb2.GetQueueStatsRequest, context: Any) -> queue_pb2.GetQueueStatsResponse:
        return queue_pb2.GetQueueStatsResponse(model=request.model, waiting=7)


class Switches(queue_pb2_grpc.AutoSwitchStoreServiceServicer):
    """The stored auto-switch setting: none until one is set."""

    def __init__(self) -> None:
        self.enabled: bool | None = None

    async def GetAutoSwitchState(
        self, request: queue_pb2.GetAutoSwitchStateRequest, context: Any
    ) -> queue_pb2.GetAutoSwitchStateResponse:
        return queue_pb2.GetAutoSwitchStateResponse(enabled=self.enabled)

    async def SetAutoSwitchState(
        self, request: queue_pb2.SetAutoSwitchStateRequest, context: Any
    ) -> queue_pb2.SetAutoSwitchStateResponse:
        self.enabled = request.enabled
        return queue_pb2.SetAutoSwitchStateResponse()


@pytest.fixture
async def queue() -> AsyncIterator[tuple[QueueClient, Identity]]:
    server = grpc.aio.server()
    # The generated bases declare every RPC abstract; these services implement only what the tests call.
    identity = Identity()  # type: ignore[abstract]
    queue_pb2_grpc.add_IdentityServiceServicer_to_server(identity, server)
    queue_pb2_grpc.add_QueueServiceServicer_to_server(Jobs(), server)  # type: ignore[abstract]
    queue_pb2_grpc.add_AutoSwitchStoreServiceServicer_to_server(Switches(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield QueueClient(channel, timeout=3.0), identity
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_identity_answers_are_typed_and_every_call_carries_the_clients_timeout(
    queue: tuple[QueueClient, Identity],
) -> None:
    client, identity = queue
    assert await client.account("alice") == Account("admin", False)
    assert await client.account("ghost") is None
    assert (await client.get_user("bob")).disabled
    assert identity.time_left
    assert all(2.0 < left <= 3.1 for left in identity.time_left), identity.time_left


async def test_an_api_key_acts_as_its_owner_and_an_unknown_or_disabled_one_is_unauthenticated(
    queue: tuple[QueueClient, Identity],
) -> None:
    client, _ = queue
    assert await client.api_key_principal("k1", "h1") == Principal("alice", "admin", "api_key", ("app-1",), "k1")
    with pytest.raises(Unauthenticated, match="API key is invalid or revoked"):
        await client.api_key_principal("k1", "wrong")


async def test_a_refusal_comes_out_as_the_domain_error_with_the_queues_message(queue: tuple[QueueClient, Identity]) -> None:
    client, _ = queue
    with pytest.raises(PermissionDenied, match="service 'router' may not call ListUsers"):
        await client.list_users()


async def test_usage_statistics_and_auto_switch_records(queue: tuple[QueueClient, Identity]) -> None:
    client, _ = queue
    assert await client.usage(7) == [UsageCount("chat", 1, 7), UsageCount("chat", 2, 14)]
    assert await client.queued("chat") == 7
    assert await client.auto_switch_enabled() is None
    await client.set_auto_switch_enabled(False, "admin")
    assert await client.auto_switch_enabled() is False
