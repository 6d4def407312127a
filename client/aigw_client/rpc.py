"""The I/O-free heart of the aigw client: settings, credentials, call specs, retry and refresh decisions."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2
from aigw_client.errors import AigwError, AuthError, PermissionDenied, error_from_rpc
from aigw_client.values import TokenInfo

DEFAULT_ROUTER_ADDRESS = "127.0.0.1:50051"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:50055"
REFRESH_MARGIN_SECONDS = 30.0
DEADLINE_GRACE_SECONDS = 5.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

Service = Literal["router", "admin"]
Out = TypeVar("Out")


@dataclass(frozen=True)
class Rpc(Generic[Out]):
    """One call, described without doing it: which service and method, the request, and how to read the reply.

    `deadline` is the gRPC deadline in seconds: "default" takes the client's timeout, None waits as long
    as the gateway works on it (inference calls: the job has its own deadline).
    """

    service: Service
    method: str
    request: Message
    convert: Callable[[Any], Out]
    priority: str = ""
    deadline: float | Literal["default"] | None = "default"
    authenticated: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """Opt-in retries of UNAVAILABLE and RESOURCE_EXHAUSTED, honouring the gateway's retry_after.

    A call is tried at most `max_attempts` times; between tries the client waits the gateway's
    retry_after (or exponential backoff with jitter when there is none). A retry_after above
    `max_retry_after` is not waited for: the error is raised at once. Streams are retried only
    before their first event. Retried inference calls carry an idempotency key, so a retry never
    runs a request twice.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, err: AigwError, attempt: int) -> float | None:
        """Seconds to wait before trying again after failed try number `attempt`, or None to give up."""
        if not err.retryable or attempt >= self.max_attempts:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.max_retry_after else None
        backoff: float = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class ClientSettings:
    """Where the gateway is and how calls are made, resolved once from arguments and the environment."""

    router_address: str = DEFAULT_ROUTER_ADDRESS
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    tls: bool = False
    client_id: str = ""
    priority: str = ""
    timeout: float = 30.0
    retry: RetryPolicy | None = None


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def resolve_settings(
    address: str | None,
    admin_address: str | None,
    *,
    client_id: str | None,
    priority: str | None,
    timeout: float,
    retry: RetryPolicy | bool | None,
    tls: bool | None,
    env: Mapping[str, str],
) -> ClientSettings:
    """Arguments win over AIGW_* variables; an admin address defaults to the router's when that was given (one gateway)."""
    router = address or env.get("AIGW_GRPC_ADDRESS") or ""
    admin = admin_address or env.get("AIGW_ADMIN_ADDRESS") or router or DEFAULT_ADMIN_ADDRESS
    policy = RetryPolicy() if retry is True else (retry or None)
    return ClientSettings(
        router_address=router or DEFAULT_ROUTER_ADDRESS,
        admin_address=admin,
        tls=_truthy(env.get("AIGW_TLS", "")) if tls is None else tls,
        client_id=env.get("AIGW_CLIENT_ID", "") if client_id is None else client_id,
        priority=(priority or "").lower(),
        timeout=timeout,
        retry=policy,
    )


@dataclass(frozen=True)
class Step:
    """What to do after a failed try: refresh the token, or wait `delay` seconds, then try again."""

    refresh: bool = False
    delay: float = 0.0


class ClientCore:
    """State and decisions shared by the sync and asyncio clients; does no I/O itself."""

    def __init__(
        self,
        settings: ClientSettings,
        token: TokenInfo | None,
        api_key: str,
        on_token: Callable[[TokenInfo], None] | None,
    ) -> None:
        self.settings = settings
        self.token = token
        self.api_key = api_key
        self.on_token = on_token
        self.lock = threading.RLock()

    def address(self, service: Service) -> str:
        return self.settings.router_address if service == "router" else self.settings.admin_address

    def bearer(self) -> str:
        return self.token.access_token if self.token and self.token.access_token else self.api_key

    def metadata(self, rpc: Rpc[Out]) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        credential = self.bearer()
        if rpc.authenticated and credential:
            items.append(("authorization", f"Bearer {credential}"))
        if self.settings.client_id:
            items.append(("x-client-id", self.settings.client_id))
        priority = rpc.priority or self.settings.priority
        if priority:
            items.append(("x-priority", priority))
        return items

    def deadline(self, rpc: Rpc[Out]) -> float | None:
        return self.settings.timeout if rpc.deadline == "default" else rpc.deadline

    def prepare(self, rpc: Rpc[Out]) -> Rpc[Out]:
        """Fills the default priority, and an idempotency key when retries may send the request again."""
        fields = rpc.request.DESCRIPTOR.fields_by_name
        priority = rpc.priority or self.settings.priority
        add_key = (
            self.settings.retry is not None and "idempotency_key" in fields and not getattr(rpc.request, "idempotency_key", "")
        )
        add_priority = bool(priority) and "priority" in fields and not getattr(rpc.request, "priority", "")
        if not (add_key or add_priority):
            return rpc
        request = type(rpc.request)()
        request.CopyFrom(rpc.request)
        # The generic Message type has no fields; both were found in the request's descriptor above.
        if add_key:
            request.idempotency_key = uuid.uuid4().hex  # type: ignore[attr-defined]
        if add_priority:
            request.priority = priority  # type: ignore[attr-defined]
        return replace(rpc, request=request)

    def error(self, exc: grpc.RpcError, rpc: Rpc[Out]) -> AigwError:
        return error_from_rpc(exc, self.address(rpc.service))

    def can_refresh(self) -> bool:
        return bool(self.token and self.token.refresh_token)

    def needs_refresh(self, rpc: Rpc[Out], now: float | None = None) -> bool:
        """Whether the access token is about to expire and can be refreshed first."""
        if not rpc.authenticated or not self.token or not self.token.refresh_token or not self.token.expires_at:
            return False
        return self.token.expires_at - (time.time() if now is None else now) < REFRESH_MARGIN_SECONDS

    def refresh_due(self, seen: str) -> bool:
        """False when another call refreshed since `seen` was the access token."""
        return self.can_refresh() and self.bearer() == seen

    def refresh_rpc(self) -> Rpc[TokenInfo]:
        assert self.token is not None
        username = self.token.username
        request = admin_pb2.IssueTokenRequest(grant_type="refresh_token", refresh_token=self.token.refresh_token)
        return Rpc("admin", "IssueToken", request, lambda r: TokenInfo.from_response(r, username), authenticated=False)

    def accept_token(self, info: TokenInfo) -> None:
        self.token = info
        if self.on_token is not None:
            self.on_token(info)

    def expired(self, err: AuthError) -> AuthError:
        """The error to raise when a refresh itself was refused."""
        self.token = None
        return AuthError(f"session expired, log in again ({err.message})", code=err.code)

    def next_step(self, rpc: Rpc[Out], err: AigwError, attempt: int, refreshed: bool, started: bool = False) -> Step | None:
        """After failed try `attempt`: refresh once on UNAUTHENTICATED, else retry per the policy, else give up (None)."""
        if started:
            return None
        if isinstance(err, AuthError) and not isinstance(err, PermissionDenied):
            return Step(refresh=True) if rpc.authenticated and not refreshed and self.can_refresh() else None
        delay = self.settings.retry.delay(err, attempt) if self.settings.retry else None
        return None if delay is None else Step(delay=delay)


def environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def resolve_credentials(
    token: str | TokenInfo | None, api_key: str | None, env: Mapping[str, str]
) -> tuple[TokenInfo | None, str]:
    """An explicit token or API key wins; else AIGW_TOKEN, else AIGW_API_KEY."""
    if isinstance(token, TokenInfo):
        return token, api_key or ""
    if token:
        return TokenInfo(token), api_key or ""
    if api_key:
        return None, api_key
    if env.get("AIGW_TOKEN"):
        return TokenInfo(env["AIGW_TOKEN"]), ""
    return None, env.get("AIGW_API_KEY", "")
