"""Service identity: mTLS credentials of the mesh and the one table that says who may call what.

Every internal call is made over mTLS with the caller's own certificate (see `aigw_server.runtime.pki`);
the server reads the verified certificate's common name (the caller's identity) and allows the
call only when `POLICY[full method name]` names that identity. A method missing from the table is
refused to everyone, so a new RPC is closed until someone decides who may call it.

`PUBLIC` is a caller without a certificate. It exists only on the public ports of the router and
the admin service, which must stay reachable by `grpcurl`, SDKs and Kubernetes probes without
client certificates (grpcio's server credentials either require a client certificate on a port
or never ask for one). Those services authenticate users by JWT or API key on every call; the
table lets `PUBLIC` call nothing but their user-facing RPCs, health and reflection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from aigw_server.runtime.config import ConfigError, GatewayConfig
from aigw_server.runtime.rpc_errors import request_id_metadata

log = logging.getLogger("aigw.authz")

PUBLIC = "public"
"""The identity of a caller that presented no certificate (public ports of router and admin only)."""

ROUTER, QUEUE, TEXTGEN, OCR, ADMIN, EDGE, PROBE = "router", "queue", "textgen", "ocr", "admin", "edge", "probe"
MESH = frozenset({ROUTER, QUEUE, TEXTGEN, OCR, ADMIN, EDGE, PROBE})

_Q = "/aigw.queue.v1."
_QS, _CRASH, _CONF, _ID, _SW = (
    f"{_Q}QueueService/",
    f"{_Q}CrashLogService/",
    f"{_Q}ModelConfigService/",
    f"{_Q}IdentityService/",
    f"{_Q}AutoSwitchStoreService/",
)
_TG, _OCR, _BE = "/aigw.textgen.v1.TextgenService/", "/aigw.ocr.v1.OcrService/", "/aigw.backend.v1.BackendService/"
_ROUTER_RPCS = (
    "GetHealth",
    "Chat",
    "StreamChat",
    "CreateChatCompletion",
    "ListModels",
    "Ocr",
    "StreamOcr",
    "ListRequests",
    "GetRequest",
    "CancelRequest",
    "WatchRequest",
)
_ADMIN_RPCS = (
    "IssueToken",
    "RevokeToken",
    "ListUsers",
    "CreateUser",
    "UpdateUser",
    "DeleteUser",
    "CreateApiKey",
    "ListApiKeys",
    "RevokeApiKey",
    "ListModels",
    "StartModel",
    "StopModel",
    "SwitchBackend",
    "GetQueueStats",
    "GetQueueSeries",
    "ListCrashes",
    "ListRequests",
    "GetModelConfig",
    "UpdateModelConfig",
    "GetAutoSwitch",
    "SetAutoSwitch",
    "SleepBackend",
    "WakeBackend",
)


def _all(prefix: str, names: tuple[str, ...], who: frozenset[str]) -> dict[str, frozenset[str]]:
    return {f"{prefix}{name}": who for name in names}


POLICY: dict[str, frozenset[str]] = {
    # Jobs: the router submits, runs (within the lease the queue granted it) and reports them;
    # the admin service reads history and statistics; the router lists a caller's own history.
    f"{_QS}Submit": frozenset({ROUTER}),
    f"{_QS}GetJob": frozenset({ROUTER, ADMIN}),
    f"{_QS}WatchJob": frozenset({ROUTER}),
    f"{_QS}CancelJob": frozenset({ROUTER, ADMIN}),
    f"{_QS}AcquireJob": frozenset({ROUTER}),
    f"{_QS}Heartbeat": frozenset({ROUTER}),
    f"{_QS}CompleteJob": frozenset({ROUTER}),
    f"{_QS}FailJob": frozenset({ROUTER}),
    f"{_QS}ReleaseJob": frozenset({ROUTER}),
    # The router's job calls over one stream: admitted once at open (router only); each call in it is
    # then one of the router-only calls above, under the same lease checks (aigw_server/queue/session.py).
    f"{_QS}Session": frozenset({ROUTER}),
    # The same stream with several calls per message: exactly who may open Session.
    f"{_QS}SessionBatches": frozenset({ROUTER}),
    f"{_QS}ListJobs": frozenset({ROUTER, ADMIN}),
    f"{_QS}GetQueueStats": frozenset({ROUTER, ADMIN}),
    f"{_QS}GetQueueSeries": frozenset({ADMIN}),
    f"{_QS}GetUsage": frozenset({ADMIN}),
    # Crash log: every service that runs work records; the admin service reads.
    f"{_CRASH}RecordCrash": frozenset({ROUTER, TEXTGEN, OCR, ADMIN}),
    f"{_CRASH}ListCrashes": frozenset({ADMIN}),
    # Dynamic model configuration: read by those who apply it, written by the admin service only.
    f"{_CONF}GetModelConfig": frozenset({ROUTER, ADMIN, TEXTGEN, OCR}),
    f"{_CONF}ListModelConfigs": frozenset({ROUTER, ADMIN, TEXTGEN, OCR}),
    f"{_CONF}UpdateModelConfig": frozenset({ADMIN}),
    f"{_CONF}ListModelConfigChanges": frozenset({ADMIN}),
    # Identities: only the admin service writes them or checks passwords (answers never carry a
    # password hash); the router looks up API keys and users to authenticate callers.
    f"{_ID}CreateUser": frozenset({ADMIN}),
    f"{_ID}GetUser": frozenset({ADMIN, ROUTER}),
    f"{_ID}ListUsers": frozenset({ADMIN}),
    f"{_ID}UpdateUser": frozenset({ADMIN}),
    f"{_ID}DeleteUser": frozenset({ADMIN}),
    f"{_ID}VerifyPassword": frozenset({ADMIN}),
    f"{_ID}CreateApiKey": frozenset({ADMIN}),
    f"{_ID}LookupApiKey": frozenset({ADMIN, ROUTER}),
    f"{_ID}ListApiKeys": frozenset({ADMIN}),
    f"{_ID}RevokeApiKey": frozenset({ADMIN}),
    f"{_ID}StoreRefreshToken": frozenset({ADMIN}),
    f"{_ID}ConsumeRefreshToken": frozenset({ADMIN}),
    f"{_ID}RevokeRefreshTokens": frozenset({ADMIN}),
    # Auto-switch state and decisions belong to the admin service.
    f"{_SW}GetAutoSwitchState": frozenset({ADMIN}),
    f"{_SW}SetAutoSwitchState": frozenset({ADMIN}),
    f"{_SW}RecordSwitchDecision": frozenset({ADMIN}),
    f"{_SW}ListSwitchDecisions": frozenset({ADMIN}),
    # Backends: the router runs inference and reads status; the admin service manages models.
    # Every backend kind implements BackendService, so one entry per RPC covers textgen and ocr.
    f"{_TG}Generate": frozenset({ROUTER}),
    f"{_TG}StreamGenerate": frozenset({ROUTER}),
    f"{_OCR}Recognize": frozenset({ROUTER}),
    f"{_OCR}StreamRecognize": frozenset({ROUTER}),
    f"{_BE}GetStatus": frozenset({ROUTER, ADMIN}),
    f"{_BE}LoadModel": frozenset({ADMIN}),
    f"{_BE}UnloadModel": frozenset({ADMIN}),
    f"{_BE}SwitchModel": frozenset({ADMIN}),
    f"{_BE}SleepModel": frozenset({ADMIN}),
    f"{_BE}WakeModel": frozenset({ADMIN}),
    # Engine addresses and credentials, for the router's direct calls: no one else, admin included.
    f"{_BE}GetEngines": frozenset({ROUTER}),
    # Public entry points: users authenticate by JWT or API key on every call, whoever connects.
    **_all("/aigw.router.v1.RouterService/", _ROUTER_RPCS, frozenset({PUBLIC, EDGE})),
    **_all("/aigw.admin.v1.AdminService/", _ADMIN_RPCS, frozenset({PUBLIC, EDGE})),
    # Health (probes, the launcher, Envoy) and reflection (grpcurl, buf curl) reveal no data.
    "/grpc.health.v1.Health/Check": MESH | {PUBLIC},
    "/grpc.health.v1.Health/Watch": MESH | {PUBLIC},
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": MESH | {PUBLIC},
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": MESH | {PUBLIC},
}


def allowed(method: str, identity: str) -> bool:
    """Whether `identity` may call the full method name `method` (a method not in the table: nobody)."""
    return identity in POLICY.get(method, frozenset())


def identity_of(auth_context: Mapping[str, Any]) -> str:
    """The caller's identity from a call's auth context: the verified certificate's common name, else PUBLIC."""
    names = auth_context.get("x509_common_name") or ()
    for name in names:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        if text in MESH:
            return text
        return f"unknown:{text[:64]}"
    return PUBLIC


def caller_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The identity of the caller of the current RPC (see `identity_of`)."""
    return identity_of(context.auth_context() or {})


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshTls:
    """One identity's key and certificate plus the mesh CA, read from the configured directory."""

    identity: str
    ca: bytes
    key: bytes
    cert: bytes

    @classmethod
    def load(cls, directory: Path, identity: str) -> MeshTls:
        try:
            return cls(
                identity,
                (directory / "ca.crt").read_bytes(),
                (directory / f"{identity}.key").read_bytes(),
                (directory / f"{identity}.crt").read_bytes(),
            )
        except OSError as exc:
            raise ConfigError(
                f"mesh_tls.dir: cannot read the {identity!r} identity in {directory} ({exc.strerror}); "
                "the launcher generates it, production mounts ca.crt, <service>.crt and <service>.key"
            ) from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate from the mesh CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that present this identity and trust only the mesh CA."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)


def mesh_tls(cfg: GatewayConfig, identity: str) -> MeshTls | None:
    """The identity's credentials, or None when the config runs the mesh in plaintext (loopback only)."""
    if cfg.mesh_tls.mode == "plaintext":
        return None
    return MeshTls.load(cfg.tls_path, identity)


# --- the server side check -------------------------------------------------------------------

Ctx = grpc.aio.ServicerContext[Any, Any]


async def authorize(method: str, context: Ctx) -> None:
    """Returns when the caller of `method` may call it; otherwise aborts the call (UNAUTHENTICATED without a
    certificate, PERMISSION_DENIED for a service identity the table does not name)."""
    identity = caller_identity(context)
    if allowed(method, identity):
        return
    name = method.lstrip("/")
    log.warning("call refused", extra={"method": method, "caller": identity})
    trailing = request_id_metadata()  # the call's id, as every error of the error boundary carries it
    if identity == PUBLIC:
        reason = f"{name} is internal to the mesh: it needs a service certificate"
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason, trailing)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"service {identity!r} may not call {name}", trailing)


# grpc-stubs make this class generic; grpc's own is not subscriptable at run time
class AuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every call whose caller identity `POLICY` does not allow, before the servicer runs.

    A caller without a certificate gets UNAUTHENTICATED, a service identity that may not call the
    method PERMISSION_DENIED; neither reaches the handler, so a refused call changes nothing.
    """

    def __init__(self, service: str) -> None:
        self.service = service

    _check = staticmethod(authorize)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        check = self._check
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Ctx) -> Any:
                await check(method, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                await check(method, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Ctx) -> Any:
                await check(method, context)
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, handler.request_deserializer, handler.response_serializer)
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Ctx) -> AsyncIterator[Any]:
            await check(method, context)
            async for item in inner_ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, handler.request_deserializer, handler.response_serializer)
