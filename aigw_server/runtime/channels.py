"""Client channels between services: tuned options and request-id propagation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from aigw_server.runtime.logs import request_id_var

if TYPE_CHECKING:
    from aigw_server.runtime.authz import MeshTls

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Above the edge's 64 KiB header limit, so an oversized credential reaches the auth check (401),
    # not gRPC's transport limit (which would answer RESOURCE_EXHAUSTED naming internal headers).
    ("grpc.max_metadata_size", 96 * 1024),
    ("grpc.absolute_max_metadata_size", 128 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # Spread calls over every address a name resolves to (several replicas behind a headless Service).
    ("grpc.lb_policy_name", "round_robin"),
]


def _with_request_id(metadata: Any) -> list[tuple[str, str]]:
    items = list(metadata or ())
    rid = request_id_var.get()
    if rid and not any(k == "x-request-id" for k, _ in items):
        items.append(("x-request-id", rid))
    return items


# grpc-stubs make this class generic; grpc's own is not subscriptable at run time
class _RequestIdClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds the current request id to every outgoing call's metadata."""

    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return await continuation(client_call_details._replace(metadata=_with_request_id(client_call_details.metadata)), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        return await continuation(client_call_details._replace(metadata=_with_request_id(client_call_details.metadata)), request)


def make_channel(address: str, tls: MeshTls | None = None, server: str = "") -> grpc.aio.Channel:
    """A long-lived in-mesh channel; with `tls`, mTLS as that identity to the service identity `server`.

    The server's certificate is verified against the mesh CA and must name `server` (whatever
    address was dialled), so a channel to the queue talks to the queue or to nobody. Without `tls`
    the channel is plaintext (a loopback-only mesh with `mesh_tls.mode: plaintext`).
    """
    # grpc-stubs leave `interceptors` a placeholder type that must be cast or ignored (`_PartialStubMustCastOrIgnore`).
    # grpc-stubs type `interceptors` as a sequence of sync ClientInterceptors; grpc.aio takes its own kind.
    interceptors = [_RequestIdClientInterceptor()]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)  # type: ignore[arg-type]
    if not server:
        raise ValueError("make_channel: a TLS channel needs the identity of the server it calls")
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server)]
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options, interceptors=interceptors)  # type: ignore[arg-type]
