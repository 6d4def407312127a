"""The record stores the rest of the mesh uses: identities, model config, crash log, auto-switch state."""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.passwords import PasswordHashing
from tests.integration.queue.conftest import CHAT, OCR, Queue, start_queue


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = err.value.code()
    return code


async def test_passwords_are_checked_in_the_queue_and_hashes_never_leave_it(queue: Queue) -> None:
    ident = queue.identity
    hashed = await PasswordHashing().hash("correct horse battery")
    bob = queue_pb2.User(username="bob", role="admin", password_hash=hashed)
    await ident.CreateUser(queue_pb2.CreateUserRequest(user=bob))
    replies = [
        (await ident.GetUser(queue_pb2.GetUserRequest(username="bob"))).user,
        *(await ident.ListUsers(queue_pb2.ListUsersRequest())).users,
        (await ident.VerifyPassword(queue_pb2.VerifyPasswordRequest(username="bob", password="correct horse battery"))).user,
    ]
    assert [u.username for u in replies] == ["bob", "bob", "bob"]
    assert all(u.password_hash == "" for u in replies)
    for name, password in (("bob", "wrong horse battery"), ("nobody", "correct horse battery")):
        wrong = ident.VerifyPassword(queue_pb2.VerifyPasswordRequest(username=name, password=password))
        assert await code_of(wrong) == grpc.StatusCode.UNAUTHENTICATED
    await ident.UpdateUser(queue_pb2.UpdateUserRequest(username="bob", disabled=True))
    disabled = ident.VerifyPassword(queue_pb2.VerifyPasswordRequest(username="bob", password="correct horse battery"))
    assert await code_of(disabled) == grpc.StatusCode.UNAUTHENTICATED


async def test_users_and_api_keys(queue: Queue) -> None:
    ident = queue.identity
    alice = queue_pb2.User(username="alice", role="user", password_hash="$argon2id$x", allowed_client_ids=["app-1"])
    created = (await ident.CreateUser(queue_pb2.CreateUserRequest(user=alice))).user
    assert created.created_at.seconds > 0
    assert await code_of(ident.CreateUser(queue_pb2.CreateUserRequest(user=alice))) == grpc.StatusCode.ALREADY_EXISTS
    bad = queue_pb2.User(username="bad name!", role="user")
    assert await code_of(ident.CreateUser(queue_pb2.CreateUserRequest(user=bad))) == grpc.StatusCode.INVALID_ARGUMENT
    change = queue_pb2.UpdateUserRequest(username="alice", disabled=True, set_allowed_client_ids=True)
    updated = (await ident.UpdateUser(change)).user
    assert updated.disabled
    assert list(updated.allowed_client_ids) == []
    assert updated.password_hash == "", "a password hash left the queue"

    key = queue_pb2.ApiKey(key_id="ak_1", secret_hash=sha("secret"), subject="alice", role="user", name="ci")
    await ident.CreateApiKey(queue_pb2.CreateApiKeyRequest(key=key))
    admin_key = queue_pb2.ApiKey(key_id="ak_2", secret_hash=sha("s2"), subject="alice", role="admin")
    assert await code_of(ident.CreateApiKey(queue_pb2.CreateApiKeyRequest(key=admin_key))) == grpc.StatusCode.INVALID_ARGUMENT
    found = (await ident.LookupApiKey(queue_pb2.LookupApiKeyRequest(key_id="ak_1", secret_hash=sha("secret")))).key
    assert found.subject == "alice"
    assert found.last_used_at.seconds > 0
    assert not found.secret_hash
    wrong = queue_pb2.LookupApiKeyRequest(key_id="ak_1", secret_hash=sha("guess"))
    assert await code_of(ident.LookupApiKey(wrong)) == grpc.StatusCode.NOT_FOUND
    listed = (await ident.ListApiKeys(queue_pb2.ListApiKeysRequest(subject="alice"))).keys
    assert [k.key_id for k in listed] == ["ak_1"]

    await ident.DeleteUser(queue_pb2.DeleteUserRequest(username="alice"))
    assert await code_of(ident.GetUser(queue_pb2.GetUserRequest(username="alice"))) == grpc.StatusCode.NOT_FOUND
    revoked = queue_pb2.LookupApiKeyRequest(key_id="ak_1", secret_hash=sha("secret"))
    assert await code_of(ident.LookupApiKey(revoked)) == grpc.StatusCode.NOT_FOUND

    restarted = await start_queue(queue.service.cfg)
    try:
        keys = (await restarted.identity.ListApiKeys(queue_pb2.ListApiKeysRequest())).keys
        assert [k.revoked_at.seconds > 0 for k in keys] == [True]
        assert not (await restarted.identity.ListUsers(queue_pb2.ListUsersRequest())).users
    finally:
        await restarted.stop()


async def test_a_refresh_token_is_used_exactly_once_and_reuse_revokes_its_family(queue: Queue) -> None:
    ident = queue.identity
    expires = Timestamp(seconds=int(time.time()) + 3600)
    for jti in ("t1", "t2"):
        token = queue_pb2.RefreshToken(token_id=jti, token_hash=sha(jti), subject="bob", family_id="fam-1", expires_at=expires)
        await ident.StoreRefreshToken(queue_pb2.StoreRefreshTokenRequest(token=token))
    consume = queue_pb2.ConsumeRefreshTokenRequest(token_id="t1", token_hash=sha("t1"))
    results = await asyncio.gather(*(ident.ConsumeRefreshToken(consume) for _ in range(5)), return_exceptions=True)
    used = [r for r in results if isinstance(r, queue_pb2.ConsumeRefreshTokenResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(used) == 1
    assert used[0].token.used_at.seconds > 0
    assert [r.code() for r in refused] == [grpc.StatusCode.UNAUTHENTICATED] * 4
    sibling = queue_pb2.ConsumeRefreshTokenRequest(token_id="t2", token_hash=sha("t2"))
    assert await code_of(ident.ConsumeRefreshToken(sibling)) == grpc.StatusCode.UNAUTHENTICATED, "reuse revoked the family"
    unknown = queue_pb2.ConsumeRefreshTokenRequest(token_id="nope", token_hash=sha("nope"))
    assert await code_of(ident.ConsumeRefreshToken(unknown)) == grpc.StatusCode.UNAUTHENTICATED

    fresh = queue_pb2.RefreshToken(token_id="t3", token_hash=sha("t3"), subject="bob", family_id="fam-2", expires_at=expires)
    await ident.StoreRefreshToken(queue_pb2.StoreRefreshTokenRequest(token=fresh))
    revoked = await ident.RevokeRefreshTokens(queue_pb2.RevokeRefreshTokensRequest(subject="bob"))
    # t3, and t1 where the embedded store's update of t1's use (a whole-document write) landed after the family's
    # revocation had marked it: t1 stays refused either way, its one use is recorded apart.
    assert revoked.revoked in (1, 2)
    for jti in ("t1", "t2", "t3"):
        again = queue_pb2.ConsumeRefreshTokenRequest(token_id=jti, token_hash=sha(jti))
        assert await code_of(ident.ConsumeRefreshToken(again)) == grpc.StatusCode.UNAUTHENTICATED, jti


async def test_model_config_is_versioned_and_every_change_is_kept(queue: Queue) -> None:
    configs = queue.configs
    listed = (await configs.ListModelConfigs(queue_pb2.ListModelConfigsRequest())).configs
    assert [(c.model, c.version, c.max_concurrent) for c in listed] == [(CHAT, 0, 10), (OCR, 0, 2)]
    assert listed[1].default_resolution == common_pb2.RESOLUTION_BASE
    params = common_pb2.GenerationParams(max_tokens=64, temperature=0.2)
    first = queue_pb2.UpdateModelConfigRequest(
        model=CHAT, expected_version=0, patch=queue_pb2.ModelConfigPatch(default_params=params), updated_by="alice"
    )
    await configs.UpdateModelConfig(first)
    second = queue_pb2.UpdateModelConfigRequest(
        model=CHAT, expected_version=1, patch=queue_pb2.ModelConfigPatch(max_concurrent=4, timeout_seconds=60), updated_by="bob"
    )
    await configs.UpdateModelConfig(second)
    assert await code_of(configs.UpdateModelConfig(second)) == grpc.StatusCode.ABORTED
    out_of_range = queue_pb2.UpdateModelConfigRequest(
        model=CHAT, expected_version=2, patch=queue_pb2.ModelConfigPatch(max_attempts=0)
    )
    assert await code_of(configs.UpdateModelConfig(out_of_range)) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = queue_pb2.UpdateModelConfigRequest(model="nope", patch=queue_pb2.ModelConfigPatch(max_attempts=2))
    assert await code_of(configs.UpdateModelConfig(unknown)) == grpc.StatusCode.NOT_FOUND

    changes = (await configs.ListModelConfigChanges(queue_pb2.ListModelConfigChangesRequest(model=CHAT))).changes
    assert [(c.version, c.updated_by, c.max_concurrent) for c in changes] == [(2, "bob", 4), (1, "alice", 10)]
    assert changes[0].default_params.max_tokens == 64

    restarted = await start_queue(queue.service.cfg)
    try:
        current = (await restarted.configs.GetModelConfig(queue_pb2.GetModelConfigRequest(model=CHAT))).config
        assert (current.version, current.max_concurrent, current.timeout_seconds) == (2, 4, 60.0)
        assert current.default_params.temperature == pytest.approx(0.2)
        job = (await restarted.submit("under new limits")).job
        assert job.timings.deadline.seconds - job.timings.submitted_at.seconds in (59, 60, 61)
    finally:
        await restarted.stop()


async def test_crash_log_records_and_lists_newest_first_with_filters_and_pages(queue: Queue) -> None:
    crashes = queue.crashes
    for i in range(5):
        event = queue_pb2.CrashEvent(
            kind=queue_pb2.CRASH_KIND_BACKEND_CRASH if i % 2 else queue_pb2.CRASH_KIND_ENGINE_RESTART,
            service="textgen",
            backend="cpu-0",
            model=CHAT,
            message=f"event {i}",
            details={"exit.code": str(i)},
            log_tail=["line 1", "line 2"],
        )
        stored = (await crashes.RecordCrash(queue_pb2.RecordCrashRequest(event=event))).event
        assert stored.id
        assert stored.at.seconds > 0
        await asyncio.sleep(0.002)
    messages: list[str] = []
    token = ""
    while True:
        page = await crashes.ListCrashes(queue_pb2.ListCrashesRequest(service="textgen", page_size=2, page_token=token))
        messages += [e.message for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert messages == [f"event {i}" for i in reversed(range(5))]
    backend = await crashes.ListCrashes(queue_pb2.ListCrashesRequest(kind=queue_pb2.CRASH_KIND_BACKEND_CRASH))
    assert [e.message for e in backend.events] == ["event 3", "event 1"]
    assert dict(backend.events[0].details) == {"exit.code": "3"}
    assert list(backend.events[0].log_tail) == ["line 1", "line 2"]
    kindless = queue_pb2.RecordCrashRequest(event=queue_pb2.CrashEvent(message="what?"))
    assert await code_of(crashes.RecordCrash(kindless)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_auto_switch_state_and_decisions(queue: Queue) -> None:
    store = queue.autoswitch
    assert not (await store.GetAutoSwitchState(queue_pb2.GetAutoSwitchStateRequest())).HasField("enabled")
    await store.SetAutoSwitchState(queue_pb2.SetAutoSwitchStateRequest(enabled=True, updated_by="ops"))
    state = await store.GetAutoSwitchState(queue_pb2.GetAutoSwitchStateRequest())
    assert state.HasField("enabled")
    assert state.enabled
    assert state.updated_by == "ops"
    for action in ("stay", "switch"):
        decision = queue_pb2.SwitchDecision(
            backend="gpu-0", from_model="a.v1", to_model="b.v2", action=action, reason="demand", scores={"a.v1": 1.5, "b.v2": 4.0}
        )
        await store.RecordSwitchDecision(queue_pb2.RecordSwitchDecisionRequest(decision=decision))
        await asyncio.sleep(0.002)
    decisions = (await store.ListSwitchDecisions(queue_pb2.ListSwitchDecisionsRequest(page_size=10))).decisions
    assert [d.action for d in decisions] == ["switch", "stay"]
    assert dict(decisions[0].scores) == {"a.v1": 1.5, "b.v2": 4.0}
    restarted = await start_queue(queue.service.cfg)
    try:
        assert (await restarted.autoswitch.GetAutoSwitchState(queue_pb2.GetAutoSwitchStateRequest())).enabled
    finally:
        await restarted.stop()
