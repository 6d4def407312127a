"""Typed Python client of the aigw gateway over its gRPC API: `AigwClient` (blocking) and `AsyncAigwClient` (asyncio).

Both front ends share one core (`client_core`: credentials, metadata, retry and refresh decisions;
`client_requests`: every request built once; `client_types`: the results), so they behave alike.

    with AigwClient() as gw:                       # AIGW_GRPC_ADDRESS / AIGW_ADMIN_ADDRESS, AIGW_TOKEN / AIGW_API_KEY
        gw.login("alice", "correct horse battery")
        answer = gw.chat("Hello!", model="tiny-chat", max_tokens=32)
        print(answer.text, answer.request_id, answer.usage.total_tokens)
        for delta in gw.stream_chat("Tell me more", model="tiny-chat"):
            print(delta.delta, end="")
        doc = gw.ocr("invoice.pdf", resolution="large", languages="eng,deu", pages="1-3")

Addresses: `address` is the router (default 127.0.0.1:50051) or an Envoy gateway serving both APIs on
one port; `admin_address` defaults to AIGW_ADMIN_ADDRESS, else to `address`/AIGW_GRPC_ADDRESS when one
was given (one gateway), else 127.0.0.1:50055. Credentials: `token` or `api_key`, else AIGW_TOKEN, else
AIGW_API_KEY, sent as `authorization: Bearer …`; `client_id` (or AIGW_CLIENT_ID) as `x-client-id`;
`priority` ("high", "normal", "low") as `x-priority`. After `login()` the client refreshes its access
token shortly before it expires and once on UNAUTHENTICATED; `on_token` sees every new token.

Errors: every failed call raises an `AigwError` carrying the gateway's message:

    AigwError                  .code (gRPC status name), .message, .retry_after (RetryInfo), .field_violations
    ├── InvalidRequest         INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    ├── AuthError              UNAUTHENTICATED (no, expired or rejected credential)
    │   └── PermissionDenied   PERMISSION_DENIED (role or client id not allowed)
    ├── NotFound               NOT_FOUND
    ├── Conflict               ALREADY_EXISTS, ABORTED (stale config version)
    ├── RateLimited            RESOURCE_EXHAUSTED (rate limit or full queue); retryable
    ├── Unavailable            UNAVAILABLE (gateway unreachable, no backend); retryable
    ├── DeadlineExceeded       DEADLINE_EXCEEDED
    └── Cancelled              CANCELLED
    (INTERNAL, UNKNOWN, UNIMPLEMENTED and the rest raise AigwError itself.)

Bad arguments found before any call (empty prompt, bad page range, unknown setting) raise ValueError;
an unreadable document raises OSError. Retries are opt-in: `retry=True` or a `RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypedDict, TypeVar, Unpack

import grpc

from aigw.admin.v1 import admin_pb2, admin_pb2_grpc
from aigw.router.v1 import router_pb2, router_pb2_grpc
from aigw_client import calls as req
from aigw_client.calls import ChatInput, Document, GenerationOptions, OcrOptions, When
from aigw_client.errors import (
    AigwError,
    AuthError,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from aigw_client.rpc import (
    CHANNEL_OPTIONS,
    DEFAULT_ADMIN_ADDRESS,
    DEFAULT_ROUTER_ADDRESS,
    ClientCore,
    RetryPolicy,
    Rpc,
    Service,
    Step,
    environ,
    resolve_credentials,
    resolve_settings,
)
from aigw_client.values import (
    ChatDelta,
    ChatResult,
    OcrPageEvent,
    OcrResult,
    RequestEvent,
    RequestInfo,
    TokenInfo,
    Usage,
    openai_chunk,
    openai_completion,
    to_jsonable,
)

__all__ = [
    "DEFAULT_ADMIN_ADDRESS",
    "DEFAULT_ROUTER_ADDRESS",
    "AigwClient",
    "AigwError",
    "AsyncAigwClient",
    "AuthError",
    "Cancelled",
    "ChatDelta",
    "ChatInput",
    "ChatResult",
    "Conflict",
    "CrashFilters",
    "DeadlineExceeded",
    "Document",
    "GenerationOptions",
    "HistoryFilters",
    "InvalidRequest",
    "NotFound",
    "OcrOptions",
    "OcrPageEvent",
    "OcrResult",
    "PermissionDenied",
    "RateLimited",
    "RequestEvent",
    "RequestInfo",
    "RetryPolicy",
    "TokenInfo",
    "Unavailable",
    "Usage",
    "to_jsonable",
]

Out = TypeVar("Out")


class CrashFilters(TypedDict, total=False):
    """Filters of the crash log: `kind` is e.g. "lease_lost", "backend_crash", "engine_restart", "deadline"."""

    service: str
    model: str
    kind: str
    request_id: str
    since: When
    until: When
    page_size: int
    page_token: str


class HistoryFilters(TypedDict, total=False):
    """Filters of the request history: `state` is "QUEUED" … "CANCELLED", `kind` "chat" or "ocr"."""

    model: str
    state: str
    kind: str
    client_id: str
    since: When
    until: When
    page_size: int
    page_token: str


def _core(
    address: str | None,
    admin_address: str | None,
    token: str | TokenInfo | None,
    api_key: str | None,
    client_id: str | None,
    priority: str | None,
    timeout: float,
    retry: RetryPolicy | bool | None,
    tls: bool | None,
    on_token: Callable[[TokenInfo], None] | None,
    env: Mapping[str, str] | None,
) -> ClientCore:
    environment = environ(env)
    settings = resolve_settings(
        address, admin_address, client_id=client_id, priority=priority, timeout=timeout, retry=retry, tls=tls, env=environment
    )
    credential, key = resolve_credentials(token, api_key, environment)
    return ClientCore(settings, credential, key, on_token)


def _stub_class(service: Service) -> Any:
    # Any: grpc-stubs type the generated stubs' methods as sync calls, which the asyncio client's are not.
    return router_pb2_grpc.RouterServiceStub if service == "router" else admin_pb2_grpc.AdminServiceStub


class AigwClient:
    """Blocking client; thread-safe. Use as a context manager or call `close()`."""

    def __init__(
        self,
        address: str | None = None,
        *,
        admin_address: str | None = None,
        token: str | TokenInfo | None = None,
        api_key: str | None = None,
        client_id: str | None = None,
        priority: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | bool | None = None,
        tls: bool | None = None,
        on_token: Callable[[TokenInfo], None] | None = None,
        env: Mapping[str, str] | None = None,
        channels: Mapping[str, grpc.Channel] | None = None,
    ) -> None:
        """`channels`: channels of your own to use for these addresses (e.g. with interceptors or credentials
        of your choice) instead of the ones the client would open; they stay yours to close."""
        self._core = _core(address, admin_address, token, api_key, client_id, priority, timeout, retry, tls, on_token, env)
        self._given = dict(channels or {})
        self._channels: dict[str, grpc.Channel] = dict(self._given)
        self._stubs: dict[Service, Any] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> AigwClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channels it opened (given ones stay open)."""
        for address, channel in self._channels.items():
            if address not in self._given:
                channel.close()
        self._channels = dict(self._given)
        self._stubs.clear()

    @property
    def token(self) -> TokenInfo | None:
        """The current login (after `login()`, a refresh, or a token passed in)."""
        return self._core.token

    @property
    def router_address(self) -> str:
        return self._core.settings.router_address

    @property
    def admin_address(self) -> str:
        return self._core.settings.admin_address

    def _stub(self, service: Service) -> Any:
        if service not in self._stubs:
            address = self._core.address(service)
            if address not in self._channels:
                if self._core.settings.tls:
                    self._channels[address] = grpc.secure_channel(address, grpc.ssl_channel_credentials(), CHANNEL_OPTIONS)
                else:
                    self._channels[address] = grpc.insecure_channel(address, CHANNEL_OPTIONS)
            self._stubs[service] = _stub_class(service)(self._channels[address])
        return self._stubs[service]

    def _start(self, rpc: Rpc[Any]) -> Any:
        if self._core.needs_refresh(rpc):
            self._refresh(self._core.bearer())
        method = getattr(self._stub(rpc.service), rpc.method)
        return method(rpc.request, metadata=self._core.metadata(rpc), timeout=self._core.deadline(rpc))

    def _refresh(self, seen: str) -> None:
        with self._core.lock:
            if not self._core.refresh_due(seen):
                return
            try:
                info = self._unary(self._core.refresh_rpc())
            except AuthError as err:
                raise self._core.expired(err) from None
            self._core.accept_token(info)

    def _after(self, step: Step | None, err: AigwError, seen: str) -> None:
        if step is None:
            raise err
        if step.refresh:
            self._refresh(seen)
        else:
            time.sleep(step.delay)

    def _unary(self, rpc: Rpc[Out]) -> Out:
        rpc = self._core.prepare(rpc)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            seen = self._core.bearer()
            try:
                return rpc.convert(self._start(rpc))
            except grpc.RpcError as exc:
                err = self._core.error(exc, rpc)
            step = self._core.next_step(rpc, err, attempt, refreshed)
            refreshed = refreshed or bool(step and step.refresh)
            self._after(step, err, seen)

    def _stream(self, rpc: Rpc[Out]) -> Iterator[Out]:
        rpc = self._core.prepare(rpc)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            seen = self._core.bearer()
            call = self._start(rpc)
            started = False
            try:
                for item in call:
                    started = True
                    yield rpc.convert(item)
                return
            except grpc.RpcError as exc:
                err = self._core.error(exc, rpc)
            finally:
                call.cancel()
            step = self._core.next_step(rpc, err, attempt, refreshed, started)
            refreshed = refreshed or bool(step and step.refresh)
            self._after(step, err, seen)

    # -- inference --------------------------------------------------------------------------

    def health(self) -> router_pb2.GetHealthResponse:
        """The router's health ("ok" or "degraded") and its dependencies'; needs no credential."""
        return self._unary(req.health())

    def models(self) -> list[str]:
        """Names of the models the gateway serves."""
        return self._unary(req.served_models())

    def chat(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatInput] | None = None,
        async_mode: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> ChatResult:
        """Answers a prompt (or conversation); with `async_mode` returns at once with the id and QUEUED status."""
        return self._unary(req.chat(prompt, messages, async_mode, options))

    def stream_chat(
        self, prompt: str | None = None, *, messages: Sequence[ChatInput] | None = None, **options: Unpack[GenerationOptions]
    ) -> Iterator[ChatDelta]:
        """The answer token by token; the last event carries finish_reason and usage."""
        return self._stream(req.stream_chat(prompt, messages, options))

    def chat_completion(self, messages: Sequence[ChatInput], **options: Unpack[GenerationOptions]) -> dict[str, Any]:
        """An OpenAI-style `chat.completion` dict, produced through the typed Chat call."""
        return openai_completion(self.chat(messages=messages, **options))

    def stream_chat_completion(
        self, messages: Sequence[ChatInput], **options: Unpack[GenerationOptions]
    ) -> Iterator[dict[str, Any]]:
        """OpenAI-style `chat.completion.chunk` dicts, produced through the typed StreamChat call."""
        created, first = int(time.time()), True
        for delta in self.stream_chat(messages=messages, **options):
            chunk = openai_chunk(delta, first, created)
            if chunk is not None:
                first = False
                yield chunk

    def ocr(self, document: Document, *, async_mode: bool = False, **options: Unpack[OcrOptions]) -> OcrResult:
        """Recognises an image or PDF given as a path or bytes; with `async_mode` returns at once with the id."""
        return self._unary(req.ocr(document, async_mode, options))

    def stream_ocr(self, document: Document, **options: Unpack[OcrOptions]) -> Iterator[OcrPageEvent]:
        """The document page by page as each finishes (events before the first page carry the queue position)."""
        return self._stream(req.stream_ocr(document, options))

    def get_request(self, request_id: str) -> RequestInfo:
        """A request's state, queue position and, once SUCCEEDED, its result."""
        return self._unary(req.get_request(request_id))

    def cancel_request(self, request_id: str) -> RequestInfo:
        """Cancels a request; returns it as it is afterwards."""
        return self._unary(req.cancel_request(request_id))

    def watch_request(self, request_id: str, *, timeout: float | None = None) -> Iterator[RequestEvent]:
        """A request's progress events until it ends."""
        return self._stream(req.watch_request(request_id, timeout))

    def wait_request(self, request_id: str, *, timeout: float | None = None) -> RequestInfo:
        """Waits (by watching) until the request ends, and returns it."""
        last: RequestInfo | None = None
        for event in self.watch_request(request_id, timeout=timeout):
            last = event.request
            if last.done:
                return last
        return self.get_request(request_id)

    # -- sessions ---------------------------------------------------------------------------

    def login(self, username: str, password: str) -> TokenInfo:
        """Gets an access and refresh token for the user; later calls use them."""
        info = self._unary(req.login(username, password))
        self._core.accept_token(info)
        return info

    def refresh(self) -> TokenInfo:
        """Exchanges the refresh token for a new pair now."""
        if not self._core.can_refresh():
            raise AuthError("no refresh token: log in first", code="UNAUTHENTICATED")
        self._refresh(self._core.bearer())
        assert self._core.token is not None
        return self._core.token

    def logout(self) -> None:
        """Revokes the refresh token's family and forgets the tokens."""
        if self._core.token and self._core.token.refresh_token:
            self._unary(req.logout(self._core.token.refresh_token))
        self._core.token = None

    # -- operations -------------------------------------------------------------------------

    def list_models(self) -> admin_pb2.ListModelsResponse:
        """Models (state, where loaded, queue numbers) and backends (status, health)."""
        return self._unary(req.list_models())

    def start_model(self, model: str, *, backend: str = "") -> admin_pb2.StartModelResponse:
        """Loads a model (on `backend`, or the least busy one able to hold it)."""
        return self._unary(req.start_model(model, backend))

    def stop_model(self, model: str, *, force: bool = False) -> admin_pb2.StopModelResponse:
        """Unloads a model from the backends holding it."""
        return self._unary(req.stop_model(model, force))

    def switch_backend(self, backend: str, model: str, *, force: bool = False) -> admin_pb2.SwitchBackendResponse:
        """Switches a backend to another model."""
        return self._unary(req.switch_backend(backend, model, force))

    def sleep_backend(self, backend: str, *, level: int = 1) -> admin_pb2.SleepBackendResponse:
        """Puts a backend's models to sleep (vLLM sleep mode; level 1 offloads weights, 2 discards them)."""
        return self._unary(req.sleep_backend(backend, level))

    def wake_backend(self, backend: str) -> admin_pb2.WakeBackendResponse:
        """Wakes a sleeping backend's models."""
        return self._unary(req.wake_backend(backend))

    def queue_stats(self, model: str) -> admin_pb2.GetQueueStatsResponse:
        """Queue numbers of a model: processing, waiting, utilization, totals, latency percentiles."""
        return self._unary(req.queue_stats(model))

    def queue_series(self, model: str, minutes: int | None = None) -> admin_pb2.GetQueueSeriesResponse:
        """A model's last `minutes` (1 to 60, default 60) in one-minute buckets: throughput, latencies, peak depth."""
        return self._unary(req.queue_series(model, minutes))

    def crashes(self, **filters: Unpack[CrashFilters]) -> admin_pb2.ListCrashesResponse:
        """The crash log, newest first."""
        return self._unary(req.crashes(filters))

    def requests_history(self, **filters: Unpack[HistoryFilters]) -> admin_pb2.ListRequestsResponse:
        """Request history, newest first."""
        return self._unary(req.requests_history(filters))

    def get_model_config(self, model: str) -> admin_pb2.ModelConfig:
        """A model's dynamic configuration and its version."""
        return self._unary(req.get_model_config(model))

    def set_model_config(
        self, model: str, changes: Mapping[str, Any], *, expected_version: int | None = None
    ) -> admin_pb2.ModelConfig:
        """Changes settings (e.g. {"max_concurrent": 4, "temperature": 0.2}); without `expected_version`, on the current one."""
        current = self.get_model_config(model)
        return self._unary(req.update_model_config(model, current, changes, expected_version))

    def list_users(self) -> list[admin_pb2.UserInfo]:
        return self._unary(req.list_users())

    def create_user(
        self, username: str, password: str, *, role: str = "user", allowed_client_ids: Sequence[str] = ()
    ) -> admin_pb2.UserInfo:
        return self._unary(req.create_user(username, password, role, allowed_client_ids))

    def update_user(
        self,
        username: str,
        *,
        role: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        allowed_client_ids: Sequence[str] | None = None,
    ) -> admin_pb2.UserInfo:
        """Changes what is given; `allowed_client_ids` replaces the list."""
        return self._unary(req.update_user(username, role, password, disabled, allowed_client_ids))

    def delete_user(self, username: str) -> None:
        self._unary(req.delete_user(username))

    def create_api_key(self, *, subject: str = "", role: str = "", name: str = "") -> admin_pb2.CreateApiKeyResponse:
        """A new API key; its secret (`api_key`) is shown only in this answer."""
        return self._unary(req.create_api_key(subject, role, name))

    def list_api_keys(self, *, subject: str = "") -> list[admin_pb2.ApiKeyInfo]:
        return self._unary(req.list_api_keys(subject))

    def revoke_api_key(self, key_id: str) -> admin_pb2.ApiKeyInfo:
        return self._unary(req.revoke_api_key(key_id))

    def get_autoswitch(self) -> admin_pb2.GetAutoSwitchResponse:
        """The auto-switcher's state, demand, plan and recent decisions."""
        return self._unary(req.get_autoswitch())

    def set_autoswitch(self, enabled: bool) -> bool:
        """Turns auto-switching on or off; returns the state now."""
        return self._unary(req.set_autoswitch(enabled))


class AsyncAigwClient:
    """asyncio client with the same methods as `AigwClient`, as coroutines and async iterators."""

    def __init__(
        self,
        address: str | None = None,
        *,
        admin_address: str | None = None,
        token: str | TokenInfo | None = None,
        api_key: str | None = None,
        client_id: str | None = None,
        priority: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | bool | None = None,
        tls: bool | None = None,
        on_token: Callable[[TokenInfo], None] | None = None,
        env: Mapping[str, str] | None = None,
        channels: Mapping[str, grpc.aio.Channel] | None = None,
    ) -> None:
        """`channels`: channels of your own to use for these addresses (e.g. with interceptors or credentials
        of your choice) instead of the ones the client would open; they stay yours to close."""
        self._core = _core(address, admin_address, token, api_key, client_id, priority, timeout, retry, tls, on_token, env)
        self._given = dict(channels or {})
        self._channels: dict[str, grpc.aio.Channel] = dict(self._given)
        self._stubs: dict[Service, Any] = {}
        self._refresh_lock = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncAigwClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channels it opened (given ones stay open)."""
        for address, channel in self._channels.items():
            if address not in self._given:
                await channel.close(None)
        self._channels = dict(self._given)
        self._stubs.clear()

    @property
    def token(self) -> TokenInfo | None:
        """The current login (after `login()`, a refresh, or a token passed in)."""
        return self._core.token

    @property
    def router_address(self) -> str:
        return self._core.settings.router_address

    @property
    def admin_address(self) -> str:
        return self._core.settings.admin_address

    def _stub(self, service: Service) -> Any:
        if service not in self._stubs:
            address = self._core.address(service)
            if address not in self._channels:
                if self._core.settings.tls:
                    self._channels[address] = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), CHANNEL_OPTIONS)
                else:
                    self._channels[address] = grpc.aio.insecure_channel(address, CHANNEL_OPTIONS)
            self._stubs[service] = _stub_class(service)(self._channels[address])
        return self._stubs[service]

    async def _start(self, rpc: Rpc[Any]) -> Any:
        if self._core.needs_refresh(rpc):
            await self._refresh(self._core.bearer())
        method = getattr(self._stub(rpc.service), rpc.method)
        return method(rpc.request, metadata=self._core.metadata(rpc), timeout=self._core.deadline(rpc))

    async def _refresh(self, seen: str) -> None:
        async with self._refresh_lock:
            if not self._core.refresh_due(seen):
                return
            try:
                info = await self._unary(self._core.refresh_rpc())
            except AuthError as err:
                raise self._core.expired(err) from None
            self._core.accept_token(info)

    async def _after(self, step: Step | None, err: AigwError, seen: str) -> None:
        if step is None:
            raise err
        if step.refresh:
            await self._refresh(seen)
        else:
            await asyncio.sleep(step.delay)

    async def _unary(self, rpc: Rpc[Out]) -> Out:
        rpc = self._core.prepare(rpc)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            seen = self._core.bearer()
            try:
                return rpc.convert(await (await self._start(rpc)))
            except grpc.RpcError as exc:
                err = self._core.error(exc, rpc)
            step = self._core.next_step(rpc, err, attempt, refreshed)
            refreshed = refreshed or bool(step and step.refresh)
            await self._after(step, err, seen)

    async def _stream(self, rpc: Rpc[Out]) -> AsyncIterator[Out]:
        rpc = self._core.prepare(rpc)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            seen = self._core.bearer()
            call = await self._start(rpc)
            started = False
            try:
                async for item in call:
                    started = True
                    yield rpc.convert(item)
                return
            except grpc.RpcError as exc:
                err = self._core.error(exc, rpc)
            finally:
                call.cancel()
            step = self._core.next_step(rpc, err, attempt, refreshed, started)
            refreshed = refreshed or bool(step and step.refresh)
            await self._after(step, err, seen)

    # -- inference --------------------------------------------------------------------------

    async def health(self) -> router_pb2.GetHealthResponse:
        """The router's health ("ok" or "degraded") and its dependencies'; needs no credential."""
        return await self._unary(req.health())

    async def models(self) -> list[str]:
        """Names of the models the gateway serves."""
        return await self._unary(req.served_models())

    async def chat(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[ChatInput] | None = None,
        async_mode: bool = False,
        **options: Unpack[GenerationOptions],
    ) -> ChatResult:
        """Answers a prompt (or conversation); with `async_mode` returns at once with the id and QUEUED status."""
        return await self._unary(req.chat(prompt, messages, async_mode, options))

    def stream_chat(
        self, prompt: str | None = None, *, messages: Sequence[ChatInput] | None = None, **options: Unpack[GenerationOptions]
    ) -> AsyncIterator[ChatDelta]:
        """The answer token by token; the last event carries finish_reason and usage."""
        return self._stream(req.stream_chat(prompt, messages, options))

    async def chat_completion(self, messages: Sequence[ChatInput], **options: Unpack[GenerationOptions]) -> dict[str, Any]:
        """An OpenAI-style `chat.completion` dict, produced through the typed Chat call."""
        return openai_completion(await self.chat(messages=messages, **options))

    async def stream_chat_completion(
        self, messages: Sequence[ChatInput], **options: Unpack[GenerationOptions]
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI-style `chat.completion.chunk` dicts, produced through the typed StreamChat call."""
        created, first = int(time.time()), True
        async for delta in self.stream_chat(messages=messages, **options):
            chunk = openai_chunk(delta, first, created)
            if chunk is not None:
                first = False
                yield chunk

    async def ocr(self, document: Document, *, async_mode: bool = False, **options: Unpack[OcrOptions]) -> OcrResult:
        """Recognises an image or PDF given as a path or bytes; with `async_mode` returns at once with the id."""
        rpc = await asyncio.to_thread(req.ocr, document, async_mode, options)
        return await self._unary(rpc)

    async def stream_ocr(self, document: Document, **options: Unpack[OcrOptions]) -> AsyncIterator[OcrPageEvent]:
        """The document page by page as each finishes (events before the first page carry the queue position)."""
        rpc = await asyncio.to_thread(req.stream_ocr, document, options)
        async for event in self._stream(rpc):
            yield event

    async def get_request(self, request_id: str) -> RequestInfo:
        """A request's state, queue position and, once SUCCEEDED, its result."""
        return await self._unary(req.get_request(request_id))

    async def cancel_request(self, request_id: str) -> RequestInfo:
        """Cancels a request; returns it as it is afterwards."""
        return await self._unary(req.cancel_request(request_id))

    def watch_request(self, request_id: str, *, timeout: float | None = None) -> AsyncIterator[RequestEvent]:
        """A request's progress events until it ends."""
        return self._stream(req.watch_request(request_id, timeout))

    async def wait_request(self, request_id: str, *, timeout: float | None = None) -> RequestInfo:
        """Waits (by watching) until the request ends, and returns it."""
        async for event in self.watch_request(request_id, timeout=timeout):
            if event.request.done:
                return event.request
        return await self.get_request(request_id)

    # -- sessions ---------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> TokenInfo:
        """Gets an access and refresh token for the user; later calls use them."""
        info = await self._unary(req.login(username, password))
        self._core.accept_token(info)
        return info

    async def refresh(self) -> TokenInfo:
        """Exchanges the refresh token for a new pair now."""
        if not self._core.can_refresh():
            raise AuthError("no refresh token: log in first", code="UNAUTHENTICATED")
        await self._refresh(self._core.bearer())
        assert self._core.token is not None
        return self._core.token

    async def logout(self) -> None:
        """Revokes the refresh token's family and forgets the tokens."""
        if self._core.token and self._core.token.refresh_token:
            await self._unary(req.logout(self._core.token.refresh_token))
        self._core.token = None

    # -- operations -------------------------------------------------------------------------

    async def list_models(self) -> admin_pb2.ListModelsResponse:
        """Models (state, where loaded, queue numbers) and backends (status, health)."""
        return await self._unary(req.list_models())

    async def start_model(self, model: str, *, backend: str = "") -> admin_pb2.StartModelResponse:
        """Loads a model (on `backend`, or the least busy one able to hold it)."""
        return await self._unary(req.start_model(model, backend))

    async def stop_model(self, model: str, *, force: bool = False) -> admin_pb2.StopModelResponse:
        """Unloads a model from the backends holding it."""
        return await self._unary(req.stop_model(model, force))

    async def switch_backend(self, backend: str, model: str, *, force: bool = False) -> admin_pb2.SwitchBackendResponse:
        """Switches a backend to another model."""
        return await self._unary(req.switch_backend(backend, model, force))

    async def sleep_backend(self, backend: str, *, level: int = 1) -> admin_pb2.SleepBackendResponse:
        """Puts a backend's models to sleep (vLLM sleep mode; level 1 offloads weights, 2 discards them)."""
        return await self._unary(req.sleep_backend(backend, level))

    async def wake_backend(self, backend: str) -> admin_pb2.WakeBackendResponse:
        """Wakes a sleeping backend's models."""
        return await self._unary(req.wake_backend(backend))

    async def queue_stats(self, model: str) -> admin_pb2.GetQueueStatsResponse:
        """Queue numbers of a model: processing, waiting, utilization, totals, latency percentiles."""
        return await self._unary(req.queue_stats(model))

    async def queue_series(self, model: str, minutes: int | None = None) -> admin_pb2.GetQueueSeriesResponse:
        """A model's last `minutes` (1 to 60, default 60) in one-minute buckets: throughput, latencies, peak depth."""
        return await self._unary(req.queue_series(model, minutes))

    async def crashes(self, **filters: Unpack[CrashFilters]) -> admin_pb2.ListCrashesResponse:
        """The crash log, newest first."""
        return await self._unary(req.crashes(filters))

    async def requests_history(self, **filters: Unpack[HistoryFilters]) -> admin_pb2.ListRequestsResponse:
        """Request history, newest first."""
        return await self._unary(req.requests_history(filters))

    async def get_model_config(self, model: str) -> admin_pb2.ModelConfig:
        """A model's dynamic configuration and its version."""
        return await self._unary(req.get_model_config(model))

    async def set_model_config(
        self, model: str, changes: Mapping[str, Any], *, expected_version: int | None = None
    ) -> admin_pb2.ModelConfig:
        """Changes settings (e.g. {"max_concurrent": 4, "temperature": 0.2}); without `expected_version`, on the current one."""
        current = await self.get_model_config(model)
        return await self._unary(req.update_model_config(model, current, changes, expected_version))

    async def list_users(self) -> list[admin_pb2.UserInfo]:
        return await self._unary(req.list_users())

    async def create_user(
        self, username: str, password: str, *, role: str = "user", allowed_client_ids: Sequence[str] = ()
    ) -> admin_pb2.UserInfo:
        return await self._unary(req.create_user(username, password, role, allowed_client_ids))

    async def update_user(
        self,
        username: str,
        *,
        role: str | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        allowed_client_ids: Sequence[str] | None = None,
    ) -> admin_pb2.UserInfo:
        """Changes what is given; `allowed_client_ids` replaces the list."""
        return await self._unary(req.update_user(username, role, password, disabled, allowed_client_ids))

    async def delete_user(self, username: str) -> None:
        await self._unary(req.delete_user(username))

    async def create_api_key(self, *, subject: str = "", role: str = "", name: str = "") -> admin_pb2.CreateApiKeyResponse:
        """A new API key; its secret (`api_key`) is shown only in this answer."""
        return await self._unary(req.create_api_key(subject, role, name))

    async def list_api_keys(self, *, subject: str = "") -> list[admin_pb2.ApiKeyInfo]:
        return await self._unary(req.list_api_keys(subject))

    async def revoke_api_key(self, key_id: str) -> admin_pb2.ApiKeyInfo:
        return await self._unary(req.revoke_api_key(key_id))

    async def get_autoswitch(self) -> admin_pb2.GetAutoSwitchResponse:
        """The auto-switcher's state, demand, plan and recent decisions."""
        return await self._unary(req.get_autoswitch())

    async def set_autoswitch(self, enabled: bool) -> bool:
        """Turns auto-switching on or off; returns the state now."""
        return await self._unary(req.set_autoswitch(enabled))
