"""Identity through the real admin and queue services on FerretDB: logins, refresh rotation, API keys, users, roles, limits."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from aigw.admin.v1 import admin_pb2
from aigw_server.runtime.auth import TokenVerifier
from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import ADMIN_PASSWORD, Mesh, bad_field, bearer, mesh, raw_config, retry_delay

pytestmark = pytest.mark.timeout(120)

ADMIN_ONLY = [
    m for m in admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods if m.name not in ("IssueToken", "RevokeToken")
]


@pytest.fixture
async def gw(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    async with mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as running:
        yield running


async def expect(code: grpc.StatusCode, call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value


async def make_user(gw: Mesh, username: str, role: str = "user", password: str = "user-password-123") -> str:
    token = await gw.admin_token()
    request = admin_pb2.CreateUserRequest(username=username, password=password, role=role)
    await gw.admin.CreateUser(request, metadata=bearer(token), timeout=10)
    return (await gw.login(username, password)).access_token


async def test_password_login_gives_a_short_lived_admin_token_and_a_refresh_token(gw: Mesh) -> None:
    reply = await gw.login()

    claims = TokenVerifier(gw.cfg.auth, gw.cfg.auth.jwt_secret).verify(reply.access_token)
    assert (claims["sub"], claims["role"], reply.role, reply.token_type) == ("admin", "admin", "admin", "bearer")
    assert reply.expires_in == gw.cfg.auth.access_token_ttl_seconds == claims["exp"] - claims["iat"]
    assert reply.refresh_expires_in == gw.cfg.auth.refresh_token_ttl_seconds
    assert reply.refresh_token
    assert reply.refresh_token != reply.access_token


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", f"username=admin&password={ADMIN_PASSWORD}".encode()),
        ("application/json", json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode()),
    ],
)
async def test_rest_form_and_json_bodies_log_in(gw: Mesh, content_type: str, body: bytes) -> None:
    request = admin_pb2.IssueTokenRequest()
    request.form.content_type = content_type
    request.form.data = body

    reply = await gw.admin.IssueToken(request, timeout=10)

    assert reply.role == "admin"
    await gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=bearer(reply.access_token), timeout=10)


async def test_wrong_password_and_unknown_user_get_the_same_answer(gw: Mesh) -> None:
    wrong = await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login("admin", "not-the-password"))
    unknown = await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login("nobody", "not-the-password"))
    malformed = await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login("no body!", "not-the-password"))

    assert wrong.details() == unknown.details() == malformed.details() == "invalid user name or password"


async def test_bad_token_requests_are_invalid_arguments(gw: Mesh) -> None:
    request = admin_pb2.IssueTokenRequest()
    request.form.content_type = "application/json"
    request.form.data = b"{broken"
    err = await expect(grpc.StatusCode.INVALID_ARGUMENT, gw.admin.IssueToken(request, timeout=10))
    assert "malformed JSON" in str(err.details())
    err = await expect(grpc.StatusCode.INVALID_ARGUMENT, gw.admin.IssueToken(admin_pb2.IssueTokenRequest(grant_type="magic")))
    assert bad_field(err) == "grant_type"


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(gw: Mesh) -> None:
    first = await gw.login()
    refresh = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=first.refresh_token)

    second = await gw.admin.IssueToken(refresh, timeout=10)
    assert second.refresh_token != first.refresh_token
    await gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=bearer(second.access_token), timeout=10)

    reused = await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.IssueToken(refresh, timeout=10))
    assert "log in again" in str(reused.details())
    successor = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=second.refresh_token)
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.IssueToken(successor, timeout=10))


async def test_refresh_through_a_form_body(gw: Mesh) -> None:
    first = await gw.login()
    request = admin_pb2.IssueTokenRequest()
    request.form.content_type = "application/x-www-form-urlencoded"
    request.form.data = f"grant_type=refresh_token&refresh_token={first.refresh_token}".encode()

    assert (await gw.admin.IssueToken(request, timeout=10)).role == "admin"


async def test_revoked_refresh_token_is_refused(gw: Mesh) -> None:
    login = await gw.login()
    other_session = await gw.login()

    revoked = await gw.admin.RevokeToken(admin_pb2.RevokeTokenRequest(refresh_token=login.refresh_token), timeout=10)

    assert revoked.revoked >= 1
    refresh = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=login.refresh_token)
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.IssueToken(refresh, timeout=10))
    other = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=other_session.refresh_token)
    assert (await gw.admin.IssueToken(other, timeout=10)).refresh_token
    garbage = await gw.admin.RevokeToken(admin_pb2.RevokeTokenRequest(refresh_token="not-a-token"), timeout=10)
    assert garbage.revoked == 0


async def test_api_key_is_shown_once_works_records_use_and_stops_after_revocation(gw: Mesh) -> None:
    token = await gw.admin_token()
    created = await gw.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(role="admin", name="ci pipeline"), metadata=bearer(token), timeout=10
    )
    key = created.api_key
    assert key.startswith(f"aigw_{created.key.key_id}_")
    assert created.key.subject == "admin"
    assert not created.key.HasField("last_used_at")

    users = await gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=bearer(key), timeout=10)
    assert [u.username for u in users.users] == ["admin"]

    listed = await gw.admin.ListApiKeys(admin_pb2.ListApiKeysRequest(subject="admin"), metadata=bearer(token), timeout=10)
    [record] = [k for k in listed.keys if k.key_id == created.key.key_id]
    assert record.HasField("last_used_at")
    assert key not in str(listed)

    await gw.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=created.key.key_id), metadata=bearer(token), timeout=10)
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=bearer(key)))
    tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=bearer(tampered)))


async def test_a_user_key_cannot_have_the_admin_role(gw: Mesh) -> None:
    await make_user(gw, "svc-reader")
    token = await gw.admin_token()
    request = admin_pb2.CreateApiKeyRequest(subject="svc-reader", role="admin")
    await expect(grpc.StatusCode.PERMISSION_DENIED, gw.admin.CreateApiKey(request, metadata=bearer(token), timeout=10))


async def test_every_admin_rpc_refuses_users_and_anonymous_callers(gw: Mesh) -> None:
    user_token = await make_user(gw, "alice")
    admin_token = await gw.admin_token()
    user_key = (
        await gw.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(subject="alice"), metadata=bearer(admin_token), timeout=10)
    ).api_key

    for method in ADMIN_ONLY:
        rpc = getattr(gw.admin, method.name)
        empty = getattr(admin_pb2, method.input_type.name)()
        for credential in (user_token, user_key):
            err = await expect(grpc.StatusCode.PERMISSION_DENIED, rpc(empty, metadata=bearer(credential), timeout=10))
            assert "admin role" in str(err.details()), method.name
        await expect(grpc.StatusCode.UNAUTHENTICATED, rpc(empty, timeout=10))
        await expect(grpc.StatusCode.UNAUTHENTICATED, rpc(empty, metadata=bearer("forged.jwt.value"), timeout=10))
    assert len(ADMIN_ONLY) == 21


async def test_user_lifecycle(gw: Mesh) -> None:
    token = await gw.admin_token()
    md = bearer(token)
    created = await gw.admin.CreateUser(
        admin_pb2.CreateUserRequest(username="bob", password="bobs-password-1", allowed_client_ids=["app-1"]), metadata=md
    )
    assert (created.user.role, list(created.user.allowed_client_ids)) == ("user", ["app-1"])
    await expect(
        grpc.StatusCode.ALREADY_EXISTS,
        gw.admin.CreateUser(admin_pb2.CreateUserRequest(username="bob", password="another-password"), metadata=md),
    )
    for bad, field in (
        (admin_pb2.CreateUserRequest(username="b", password="long-enough-pass"), "username"),
        (admin_pb2.CreateUserRequest(username="carol", password="short"), "password"),
        (admin_pb2.CreateUserRequest(username="carol", password="long-enough-pass", role="root"), "role"),
    ):
        err = await expect(grpc.StatusCode.INVALID_ARGUMENT, gw.admin.CreateUser(bad, metadata=md))
        assert bad_field(err) == field
    assert [u.username for u in (await gw.admin.ListUsers(admin_pb2.ListUsersRequest(), metadata=md)).users] == ["admin", "bob"]

    promoted = await gw.admin.UpdateUser(admin_pb2.UpdateUserRequest(username="bob", role="admin"), metadata=md)
    assert promoted.user.role == "admin"
    bob = await gw.login("bob", "bobs-password-1")
    assert bob.role == "admin"

    await gw.admin.UpdateUser(admin_pb2.UpdateUserRequest(username="bob", disabled=True), metadata=md)
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login("bob", "bobs-password-1"))
    refresh = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=bob.refresh_token)
    await expect(grpc.StatusCode.UNAUTHENTICATED, gw.admin.IssueToken(refresh))

    await gw.admin.DeleteUser(admin_pb2.DeleteUserRequest(username="bob"), metadata=md)
    await expect(grpc.StatusCode.NOT_FOUND, gw.admin.DeleteUser(admin_pb2.DeleteUserRequest(username="bob"), metadata=md))


async def test_an_admin_cannot_lock_themselves_out(gw: Mesh) -> None:
    md = bearer(await gw.admin_token())
    for change in (
        admin_pb2.UpdateUserRequest(username="admin", role="user"),
        admin_pb2.UpdateUserRequest(username="admin", disabled=True),
    ):
        await expect(grpc.StatusCode.FAILED_PRECONDITION, gw.admin.UpdateUser(change, metadata=md))
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION, gw.admin.DeleteUser(admin_pb2.DeleteUserRequest(username="admin"), metadata=md)
    )
    assert (await gw.login()).role == "admin"


async def test_brute_force_is_limited_and_a_forwarded_for_from_a_non_edge_caller_is_ignored(
    ferretdb: FerretDBProcess, db_name: str, tmp_path: Path
) -> None:
    raw = raw_config(ferretdb.uri, db_name, tmp_path, auth={"login_attempts_per_minute": 3})
    async with mesh(raw) as gw:
        for i in range(3):
            # Each guess claims another client address: only the edge's certificate makes that believable.
            forged = {"x-forwarded-for": f"198.51.100.{i}"}
            await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login("admin", "guess-guess-guess", **forged))
        limited = await expect(
            grpc.StatusCode.RESOURCE_EXHAUSTED, gw.login("admin", ADMIN_PASSWORD, **{"x-forwarded-for": "198.51.100.99"})
        )
        assert "too many login attempts" in str(limited.details())
        delay = retry_delay(limited)
        assert delay is not None
        assert 0 < delay <= 60
        # The same source is also limited across other accounts.
        await expect(grpc.StatusCode.RESOURCE_EXHAUSTED, gw.login("someone-else", "guess-guess-guess"))


async def test_bootstrap_admin_password_is_generated_once(
    ferretdb: FerretDBProcess, db_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = raw_config(ferretdb.uri, db_name, tmp_path, auth={"jwt_secret": "s" * 48, "admin_password": ""})
    secret_file = tmp_path / "secrets" / "admin_password"
    with caplog.at_level(logging.WARNING, logger="aigw_server.admin.bootstrap"):
        async with mesh(raw) as gw:
            password = secret_file.read_text().strip()
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            assert len(password) >= 32
            assert (await gw.login("admin", password)).role == "admin"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and str(secret_file) in r.getMessage()]
    assert len(warnings) == 1
    assert not any(password in r.getMessage() for r in caplog.records)
    written = secret_file.stat().st_mtime_ns

    caplog.clear()
    async with mesh(raw) as gw:
        assert (await gw.login("admin", password)).role == "admin"
    assert secret_file.stat().st_mtime_ns == written
    assert not any(password in r.getMessage() for r in caplog.records)


async def test_admin_password_from_the_environment_is_applied(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> None:
    async with mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as gw:
        assert (await gw.login()).role == "admin"
    changed = raw_config(ferretdb.uri, db_name, tmp_path, auth={"admin_password": "a-new-bootstrap-password"})
    async with mesh(changed) as gw:
        assert (await gw.login("admin", "a-new-bootstrap-password")).role == "admin"
        await expect(grpc.StatusCode.UNAUTHENTICATED, gw.login())
    assert not (tmp_path / "secrets" / "admin_password").exists()
