"""AdminService's servicer in process: proto ⇄ domain mapping, the status codes and details its errors are sent with,
and the metadata it reads (credentials, the edge's x-forwarded-for).

grpc_testing drives sync servicers only; this one is a grpc.aio servicer, so its methods are awaited directly with
an in-process ServicerContext, and a domain error is turned into its status by `rpc_errors.to_status`, as the
server's interceptor does. The domain objects are the real ones over an in-memory queue store.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin.access import Access
from aigw_server.admin.autoswitch import UsageCount
from aigw_server.admin.fleet import Fleet
from aigw_server.admin.identity import Accounts
from aigw_server.admin.login_limiter import LoginLimiter
from aigw_server.admin.model_config import ModelSettings
from aigw_server.admin.passwords import PasswordHashing
from aigw_server.admin.servicer import AdminDomain, AdminServicer
from aigw_server.admin.sessions import Sessions, TokenPair
from aigw_server.admin.switcher import AutoSwitcher
from aigw_server.runtime.auth import TokenSigner, TokenVerifier
from aigw_server.runtime.config import GatewayConfig, parse_config
from aigw_server.runtime.errors import Aborted, AlreadyExists, GatewayError, NotFound, Unauthenticated
from aigw_server.runtime.rpc_errors import to_status

SECRET = "servicer-unit-secret-" + "s" * 40
PASSWORD = "correct horse battery staple"
R = TypeVar("R", bound=Message)


class CallAborted(Exception):
    """What `abort` raises, as grpc.aio's does, so the method stops there."""


Sent = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]


class CallContext(grpc.aio.ServicerContext[Message, Message]):
    """One call's context: the metadata and peer it was made with, and the status the servicer ended it with."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = (), peer: str = "ipv4:10.1.2.3:40000", identity: str = "") -> None:
        self.metadata = grpc.aio.Metadata(*metadata)
        self.caller = peer
        self.identity = identity
        self.status_code: grpc.StatusCode | None = None
        self.status_details = ""
        self.trailing: Sent = ()

    async def read(self) -> Message:
        raise NotImplementedError("unary calls read no stream")

    async def write(self, message: Message) -> None:
        raise NotImplementedError("unary calls write no stream")

    async def send_initial_metadata(self, initial_metadata: Sent) -> None:
        raise NotImplementedError("the admin servicer sends no initial metadata")

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sent = ()) -> NoReturn:
        self.status_code, self.status_details, self.trailing = code, details, trailing_metadata
        raise CallAborted(details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sent) -> None:
        self.trailing = trailing_metadata

    def invocation_metadata(self) -> grpc.aio.Metadata:
        return self.metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status_code = code

    def set_details(self, details: str) -> None:
        self.status_details = details

    def set_compression(self, compression: grpc.Compression) -> None:
        """Compression is the transport's business; nothing to record."""

    def disable_next_message_compression(self) -> None:
        """Compression is the transport's business; nothing to record."""

    def peer(self) -> str:
        return self.caller

    def peer_identities(self) -> Iterable[bytes] | None:
        return [self.identity.encode()] if self.identity else None

    def peer_identity_key(self) -> str | None:
        return "x509_common_name" if self.identity else None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {"x509_common_name": [self.identity.encode()]} if self.identity else {}


class MemoryQueue:
    """The queue service's stores the admin domain uses, in memory, recording the requests it was sent."""

    def __init__(self) -> None:
        self.users: dict[str, queue_pb2.User] = {}
        self.passwords: dict[str, str] = {}
        self.keys: dict[str, queue_pb2.ApiKey] = {}
        self.refresh: dict[str, queue_pb2.RefreshToken] = {}
        self.config = queue_pb2.ModelConfig(model="chat-a", version=3, max_concurrent=10, max_waiting=10, enabled=True)
        self.stats = queue_pb2.GetQueueStatsResponse(model="chat-a", processing=2, waiting=5, total_processed=40)
        self.stats.queue_wait_ms.p99 = 12.5
        self.series = queue_pb2.GetQueueSeriesResponse(model="chat-a", bucket_seconds=60)
        self.crashes = queue_pb2.ListCrashesResponse(next_page_token="next")
        self.jobs = queue_pb2.ListJobsResponse(jobs=[common_pb2.Job(request_id="r1", model="chat-a", state=common_pb2.FAILED)])
        self.decisions = [queue_pb2.SwitchDecision(id="d1", backend="b1", action="stay", scores={"chat-a": 1.5})]
        self.auto_switch: tuple[bool, str] | None = None
        self.asked: list[Message] = []
        self.config_changes: list[tuple[str, int, queue_pb2.ModelConfigPatch, str]] = []
        self.series_minutes: list[int | None] = []

    def add_user(self, username: str, role: str, password: str = PASSWORD) -> None:
        self.users[username] = queue_pb2.User(username=username, role=role, password_hash="$argon2id$stored")
        self.users[username].created_at.seconds = 1_800_000_000
        self.passwords[username] = password

    async def get_user(self, username: str) -> queue_pb2.User:
        if username not in self.users:
            raise NotFound(f"no user named {username!r}")
        return self.users[username]

    async def create_user(self, user: queue_pb2.User) -> queue_pb2.User:
        if user.username in self.users:
            raise AlreadyExists(f"user {user.username!r} exists")
        self.users[user.username] = user
        return user

    async def verify_password(self, username: str, password: str) -> queue_pb2.User:
        if self.passwords.get(username) != password:
            raise Unauthenticated("bad password")
        return self.users[username]

    async def list_users(self) -> list[queue_pb2.User]:
        return list(self.users.values())

    async def update_user(self, change: queue_pb2.UpdateUserRequest) -> queue_pb2.User:
        user = await self.get_user(change.username)
        if change.HasField("role"):
            user.role = change.role
        if change.HasField("disabled"):
            user.disabled = change.disabled
        return user

    async def delete_user(self, username: str) -> None:
        await self.get_user(username)
        del self.users[username]

    async def create_api_key(self, key: queue_pb2.ApiKey) -> queue_pb2.ApiKey:
        stored = queue_pb2.ApiKey()
        stored.CopyFrom(key)
        stored.created_at.seconds = 1_800_000_100
        self.keys[key.key_id] = stored
        answer = queue_pb2.ApiKey()
        answer.CopyFrom(stored)
        return answer

    async def lookup_api_key(self, key_id: str, secret_hash: str) -> queue_pb2.ApiKey:
        key = self.keys.get(key_id)
        if key is None or key.secret_hash != secret_hash or key.HasField("revoked_at"):
            raise NotFound("no such key")
        return key

    async def list_api_keys(self, subject: str) -> list[queue_pb2.ApiKey]:
        return [k for k in self.keys.values() if not subject or k.subject == subject]

    async def revoke_api_key(self, key_id: str) -> queue_pb2.ApiKey:
        if key_id not in self.keys:
            raise NotFound(f"no API key {key_id!r}")
        self.keys[key_id].revoked_at.seconds = 1_800_000_200
        return self.keys[key_id]

    async def store_refresh_token(self, token: queue_pb2.RefreshToken) -> None:
        self.refresh[token.token_id] = token

    async def consume_refresh_token(self, token_id: str, token_hash: str) -> queue_pb2.RefreshToken:
        token = self.refresh.pop(token_id, None)
        if token is None or token.token_hash != token_hash:
            raise Unauthenticated("refresh token unknown or used")
        return token

    async def revoke_refresh_tokens(self, family_id: str = "", subject: str = "") -> int:
        gone = [
            t for t, r in self.refresh.items() if (family_id and r.family_id == family_id) or (subject and r.subject == subject)
        ]
        for token_id in gone:
            del self.refresh[token_id]
        return len(gone)

    async def get_model_config(self, model: str) -> queue_pb2.ModelConfig:
        return self.config

    async def update_model_config(
        self, model: str, expected_version: int, patch: queue_pb2.ModelConfigPatch, updated_by: str
    ) -> queue_pb2.ModelConfig:
        self.config_changes.append((model, expected_version, patch, updated_by))
        if expected_version != self.config.version:
            raise Aborted(f"model config of {model} is at version {self.config.version}, not {expected_version}")
        if patch.HasField("max_waiting"):
            self.config.max_waiting = patch.max_waiting
        self.config.version += 1
        self.config.updated_by = updated_by
        return self.config

    async def queue_stats(self, model: str) -> queue_pb2.GetQueueStatsResponse:
        return self.stats

    async def queue_series(self, model: str, minutes: int | None) -> queue_pb2.GetQueueSeriesResponse:
        self.series_minutes.append(minutes)
        return self.series

    async def model_configs(self) -> list[queue_pb2.ModelConfig]:
        return [self.config]

    async def auto_switch_enabled(self) -> bool | None:
        return None if self.auto_switch is None else self.auto_switch[0]

    async def set_auto_switch_enabled(self, enabled: bool, updated_by: str) -> None:
        self.auto_switch = (enabled, updated_by)

    async def record_decision(self, decision: queue_pb2.SwitchDecision) -> queue_pb2.SwitchDecision:
        self.decisions.insert(0, decision)
        return decision

    async def recent_decisions(self, limit: int) -> list[queue_pb2.SwitchDecision]:
        return self.decisions[:limit]

    async def usage(self, window_days: int) -> list[UsageCount]:
        return []

    async def queued(self, model: str) -> int:
        return int(self.stats.waiting)

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        self.asked.append(request)
        return self.jobs

    async def list_crashes(self, request: queue_pb2.ListCrashesRequest) -> queue_pb2.ListCrashesResponse:
        self.asked.append(request)
        return self.crashes


class RecordingSessions(Sessions):
    """Sessions that remember the client address each login was counted against."""

    ips: list[str]

    async def login(self, username: str, password: str, client_ip: str) -> TokenPair:
        self.ips.append(client_ip)
        return await super().login(username, password, client_ip)


class Admin:
    """The servicer over the real admin domain and an in-memory queue, with credentials of an admin and a user."""

    def __init__(self, cfg: GatewayConfig, store: MemoryQueue, hashing: PasswordHashing) -> None:
        verifier = TokenVerifier(cfg.auth, SECRET)
        signer = TokenSigner(cfg.auth, SECRET)
        self.sessions = RecordingSessions(store, hashing, signer, verifier, LoginLimiter(2))
        self.sessions.ips = []
        fleet = Fleet(cfg, {}, store)
        self.servicer = AdminServicer(
            AdminDomain(
                access=Access(verifier, store),
                sessions=self.sessions,
                accounts=Accounts(store, hashing),
                fleet=fleet,
                settings=ModelSettings(cfg, store),
                switcher=AutoSwitcher(cfg.auto_switch, fleet, store, store),
                history=store,
            )
        )
        store.add_user("root", "admin")
        store.add_user("ada", "user")
        self.admin = (("authorization", f"Bearer {signer.issue_access('root', 'admin')[0]}"),)
        self.user = (("authorization", f"Bearer {signer.issue_access('ada', 'user')[0]}"),)


@pytest.fixture
def store() -> MemoryQueue:
    return MemoryQueue()


@pytest.fixture(scope="module")
def hashing() -> PasswordHashing:
    """One password hasher for the module: making one calibrates its cost, which takes a while."""
    return PasswordHashing()


@pytest.fixture
def admin(tmp_path: Path, store: MemoryQueue, hashing: PasswordHashing) -> Admin:
    raw = {
        "data_dir": str(tmp_path),
        "mesh_tls": {"mode": "plaintext"},
        "auth": {"jwt_secret": SECRET},
        "models": {"chat-a": {"kind": "chat", "max_concurrent": 10}},
    }
    return Admin(parse_config(raw, env={}), store, hashing)


async def refused(call: Awaitable[Message]) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    """The code, message and google.rpc.Status a call that fails is answered with (what the interceptor sends)."""
    try:
        await call
    except GatewayError as exc:
        status = to_status(exc)
        [details] = [value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"]
        assert isinstance(details, bytes)
        return status.code, status.details, status_pb2.Status.FromString(details)
    raise AssertionError("the call succeeded")


def detail(status: status_pb2.Status, kind: Callable[[], R]) -> R:
    """The one detail of a type a status carries."""
    found = kind()
    [packed] = [d for d in status.details if d.Is(found.DESCRIPTOR)]
    packed.Unpack(found)
    return found


# --- credentials and status codes --------------------------------------------------------------


async def test_a_call_without_credentials_is_unauthenticated(admin: Admin) -> None:
    code, _, _ = await refused(admin.servicer.ListUsers(admin_pb2.ListUsersRequest(), CallContext()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_user_token_is_denied_the_admin_rpcs(admin: Admin) -> None:
    code, _, _ = await refused(admin.servicer.ListUsers(admin_pb2.ListUsersRequest(), CallContext(admin.user)))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_api_key_in_its_metadata_header_is_accepted(admin: Admin, store: MemoryQueue) -> None:
    created = await admin.servicer.CreateApiKey(admin_pb2.CreateApiKeyRequest(role="admin", name="ci"), CallContext(admin.admin))
    listed = await admin.servicer.ListUsers(admin_pb2.ListUsersRequest(), CallContext((("x-api-key", created.api_key),)))
    assert [u.username for u in listed.users] == ["ada", "root"]


async def test_a_bad_field_is_invalid_argument_naming_it(admin: Admin) -> None:
    code, message, status = await refused(admin.servicer.RevokeToken(admin_pb2.RevokeTokenRequest(), CallContext()))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "refresh_token: required")
    assert detail(status, error_details_pb2.BadRequest).field_violations[0].field == "refresh_token"


async def test_a_stale_config_version_is_aborted(admin: Admin) -> None:
    request = admin_pb2.UpdateModelConfigRequest(
        model="chat-a", expected_version=1, patch=admin_pb2.ModelConfigPatch(max_waiting=4)
    )
    code, message, _ = await refused(admin.servicer.UpdateModelConfig(request, CallContext(admin.admin)))
    assert (code, message) == (grpc.StatusCode.ABORTED, "model config of chat-a is at version 3, not 1")


async def test_an_unknown_model_is_not_found(admin: Admin) -> None:
    code, _, _ = await refused(
        admin.servicer.GetModelConfig(admin_pb2.GetModelConfigRequest(model="nope"), CallContext(admin.admin))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_too_many_failed_logins_are_resource_exhausted_with_retry_info(admin: Admin) -> None:
    bad = admin_pb2.IssueTokenRequest(username="ada", password="wrong password here")
    for _ in range(2):
        assert (await refused(admin.servicer.IssueToken(bad, CallContext())))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, _, status = await refused(admin.servicer.IssueToken(bad, CallContext()))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0


# --- tokens and the metadata the servicer reads ------------------------------------------------


async def test_a_password_login_answers_an_oauth_token_pair(admin: Admin) -> None:
    reply = await admin.servicer.IssueToken(admin_pb2.IssueTokenRequest(username="ada", password=PASSWORD), CallContext())
    assert (reply.token_type, reply.role, reply.expires_in > 0, reply.refresh_expires_in > 0) == ("bearer", "user", True, True)
    renewed = await admin.servicer.IssueToken(
        admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=reply.refresh_token), CallContext()
    )
    assert renewed.refresh_token != reply.refresh_token
    revoked = await admin.servicer.RevokeToken(admin_pb2.RevokeTokenRequest(refresh_token=renewed.refresh_token), CallContext())
    assert revoked.revoked == 1


async def test_x_forwarded_for_counts_only_from_the_edge(admin: Admin) -> None:
    login = admin_pb2.IssueTokenRequest(username="ada", password=PASSWORD)
    forwarded = (("x-forwarded-for", "203.0.113.9"),)
    await admin.servicer.IssueToken(login, CallContext(forwarded, peer="ipv4:10.9.9.9:1234"))
    await admin.servicer.IssueToken(login, CallContext(forwarded, peer="ipv4:10.9.9.9:1234", identity="edge"))
    assert admin.sessions.ips == ["10.9.9.9", "203.0.113.9"]


async def test_a_rest_form_body_is_read_as_the_token_request(admin: Admin) -> None:
    form = admin_pb2.IssueTokenRequest()
    form.form.content_type = "application/x-www-form-urlencoded"
    form.form.data = f"username=ada&password={PASSWORD.replace(' ', '+')}".encode()
    assert (await admin.servicer.IssueToken(form, CallContext())).role == "user"


# --- users and keys: the stored records as operators see them ----------------------------------


async def test_users_are_shown_without_their_password_hash(admin: Admin) -> None:
    created = await admin.servicer.CreateUser(
        admin_pb2.CreateUserRequest(username="grace", password=PASSWORD, allowed_client_ids=["app-1"]), CallContext(admin.admin)
    )
    assert (created.user.username, created.user.role, list(created.user.allowed_client_ids)) == ("grace", "user", ["app-1"])
    assert "password_hash" not in admin_pb2.UserInfo.DESCRIPTOR.fields_by_name
    updated = await admin.servicer.UpdateUser(
        admin_pb2.UpdateUserRequest(username="grace", disabled=True), CallContext(admin.admin)
    )
    assert (updated.user.disabled, updated.user.role) == (True, "user")
    await admin.servicer.DeleteUser(admin_pb2.DeleteUserRequest(username="grace"), CallContext(admin.admin))
    listed = await admin.servicer.ListUsers(admin_pb2.ListUsersRequest(), CallContext(admin.admin))
    assert [(u.username, u.created_at.seconds) for u in listed.users] == [("ada", 1_800_000_000), ("root", 1_800_000_000)]


async def test_an_api_key_is_shown_once_and_its_revocation_time_after(admin: Admin, store: MemoryQueue) -> None:
    created = await admin.servicer.CreateApiKey(admin_pb2.CreateApiKeyRequest(subject="ada", name="ci"), CallContext(admin.admin))
    key_id = created.key.key_id
    assert created.api_key.startswith(f"aigw_{key_id}_")
    assert store.keys[key_id].secret_hash == hashlib.sha256(created.api_key.removeprefix(f"aigw_{key_id}_").encode()).hexdigest()
    assert (created.key.subject, created.key.role, created.key.HasField("revoked_at")) == ("ada", "user", False)
    listed = await admin.servicer.ListApiKeys(admin_pb2.ListApiKeysRequest(subject="ada"), CallContext(admin.admin))
    assert [k.key_id for k in listed.keys] == [key_id]
    revoked = await admin.servicer.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=key_id), CallContext(admin.admin))
    assert revoked.key.revoked_at.seconds == 1_800_000_200


# --- models, queue numbers, history and config: queue messages as the admin API's own ----------


async def test_queue_numbers_come_back_as_admin_messages(admin: Admin, store: MemoryQueue) -> None:
    stats = await admin.servicer.GetQueueStats(admin_pb2.GetQueueStatsRequest(model="chat-a"), CallContext(admin.admin))
    assert isinstance(stats, admin_pb2.GetQueueStatsResponse)
    assert (stats.processing, stats.waiting, stats.total_processed, stats.queue_wait_ms.p99) == (2, 5, 40, 12.5)
    listed = await admin.servicer.ListModels(admin_pb2.ListModelsRequest(), CallContext(admin.admin))
    [model] = listed.models
    assert (model.model, model.kind, model.state, model.queue.waiting) == ("chat-a", "chat", "stopped", 5)


async def test_the_series_asks_the_queue_default_unless_minutes_are_given(admin: Admin, store: MemoryQueue) -> None:
    ctx = CallContext(admin.admin)
    await admin.servicer.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a"), ctx)
    await admin.servicer.GetQueueSeries(admin_pb2.GetQueueSeriesRequest(model="chat-a", minutes=5), ctx)
    assert store.series_minutes == [None, 5]


async def test_crash_filters_reach_the_queue_and_events_come_back(admin: Admin, store: MemoryQueue) -> None:
    event = store.crashes.events.add(id="e1", kind=queue_pb2.CRASH_KIND_LEASE_LOST, service="router", details={"attempt": "2"})
    event.at.seconds = 1_800_000_300
    request = admin_pb2.ListCrashesRequest(service="router", kind=admin_pb2.CRASH_KIND_LEASE_LOST, page_size=10)
    request.since.seconds = 1_800_000_000
    reply = await admin.servicer.ListCrashes(request, CallContext(admin.admin))
    asked = store.asked[-1]
    assert isinstance(asked, queue_pb2.ListCrashesRequest)
    assert (asked.service, asked.kind, asked.page_size, asked.since.seconds, asked.HasField("until")) == (
        "router",
        queue_pb2.CRASH_KIND_LEASE_LOST,
        10,
        1_800_000_000,
        False,
    )
    [shown] = reply.events
    assert (shown.id, shown.kind, shown.at.seconds, dict(shown.details)) == (
        "e1",
        admin_pb2.CRASH_KIND_LEASE_LOST,
        1_800_000_300,
        {"attempt": "2"},
    )
    assert reply.next_page_token == "next"


async def test_a_listing_page_size_out_of_range_is_refused_before_the_queue_is_asked(admin: Admin, store: MemoryQueue) -> None:
    code, _, status = await refused(
        admin.servicer.ListRequests(admin_pb2.ListRequestsRequest(page_size=501), CallContext(admin.admin))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail(status, error_details_pb2.BadRequest).field_violations[0].field == "page_size"
    assert store.asked == []


async def test_history_asks_every_submitters_jobs(admin: Admin, store: MemoryQueue) -> None:
    request = admin_pb2.ListRequestsRequest(
        model="chat-a", state=common_pb2.FAILED, client_id="app-1", kind=common_pb2.JOB_KIND_CHAT
    )
    reply = await admin.servicer.ListRequests(request, CallContext(admin.admin))
    asked = store.asked[-1]
    assert isinstance(asked, queue_pb2.ListJobsRequest)
    assert (asked.model, asked.state, asked.client_id, asked.kind, asked.subject) == (
        "chat-a",
        common_pb2.FAILED,
        "app-1",
        common_pb2.JOB_KIND_CHAT,
        "",
    )
    assert [r.request_id for r in reply.requests] == ["r1"]


async def test_a_config_change_carries_only_the_fields_sent_and_its_author(admin: Admin, store: MemoryQueue) -> None:
    request = admin_pb2.UpdateModelConfigRequest(
        model="chat-a", expected_version=3, patch=admin_pb2.ModelConfigPatch(max_waiting=0)
    )
    reply = await admin.servicer.UpdateModelConfig(request, CallContext(admin.admin))
    [(model, version, patch, author)] = store.config_changes
    assert (model, version, author) == ("chat-a", 3, "root")
    assert [f.name for f, _ in patch.ListFields()] == ["max_waiting"]
    assert (reply.config.version, reply.config.max_waiting, reply.config.updated_by) == (4, 0, "root")
    shown = await admin.servicer.GetModelConfig(admin_pb2.GetModelConfigRequest(model="chat-a"), CallContext(admin.admin))
    assert isinstance(shown.config, admin_pb2.ModelConfig)
    assert shown.config.version == 4


async def test_a_config_change_without_a_version_is_invalid_not_a_conflict(admin: Admin, store: MemoryQueue) -> None:
    request = admin_pb2.UpdateModelConfigRequest(model="chat-a", patch=admin_pb2.ModelConfigPatch(max_waiting=2))
    code, _, status = await refused(admin.servicer.UpdateModelConfig(request, CallContext(admin.admin)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail(status, error_details_pb2.BadRequest).field_violations[0].field == "expected_version"
    assert store.config_changes == []


async def test_the_auto_switcher_shows_recorded_decisions_and_records_who_turned_it(admin: Admin, store: MemoryQueue) -> None:
    shown = await admin.servicer.GetAutoSwitch(admin_pb2.GetAutoSwitchRequest(), CallContext(admin.admin))
    [decision] = shown.decisions
    assert (decision.id, decision.backend, decision.action, dict(decision.scores)) == ("d1", "b1", "stay", {"chat-a": 1.5})
    assert shown.HasField("evaluated_at")
    turned = await admin.servicer.SetAutoSwitch(admin_pb2.SetAutoSwitchRequest(enabled=True), CallContext(admin.admin))
    assert turned.enabled
    assert store.auto_switch == (True, "root")


async def test_an_unknown_backend_is_not_found(admin: Admin) -> None:
    request = admin_pb2.SwitchBackendRequest(backend=f"b-{uuid.uuid4().hex[:6]}", model="chat-a")
    code, _, _ = await refused(admin.servicer.SwitchBackend(request, CallContext(admin.admin)))
    assert code == grpc.StatusCode.NOT_FOUND
