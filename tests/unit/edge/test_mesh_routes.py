"""The real descriptor set loads and the whole documented REST surface of the mesh reaches the right RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aigw_server.edge.bindings import annotated_services, load_bindings
from aigw_server.edge.gateway import Gateway
from aigw_server.edge.service import config_resolver, descriptor_set_path
from aigw_server.runtime.config import parse_config

ROUTER = "aigw.router.v1.RouterService"
ADMIN = "aigw.admin.v1.AdminService"

SURFACE = [
    ("GET", "/health", f"{ROUTER}/GetHealth"),
    ("POST", "/api/chat", f"{ROUTER}/Chat"),
    ("POST", "/api/chat/stream", f"{ROUTER}/StreamChat"),
    ("POST", "/v1/chat/completions", f"{ROUTER}/CreateChatCompletion"),
    ("GET", "/v1/models", f"{ROUTER}/ListModels"),
    ("POST", "/api/ocr", f"{ROUTER}/Ocr"),
    ("POST", "/api/ocr/stream", f"{ROUTER}/StreamOcr"),
    ("GET", "/v1/requests", f"{ROUTER}/ListRequests"),
    ("GET", "/v1/requests/abc123", f"{ROUTER}/GetRequest"),
    ("DELETE", "/v1/requests/abc123", f"{ROUTER}/CancelRequest"),
    ("GET", "/v1/requests/abc123:watch", f"{ROUTER}/WatchRequest"),
    ("POST", "/auth/token", f"{ADMIN}/IssueToken"),
    ("POST", "/auth/revoke", f"{ADMIN}/RevokeToken"),
    ("GET", "/admin/users", f"{ADMIN}/ListUsers"),
    ("POST", "/admin/users", f"{ADMIN}/CreateUser"),
    ("PATCH", "/admin/users/alice", f"{ADMIN}/UpdateUser"),
    ("DELETE", "/admin/users/alice", f"{ADMIN}/DeleteUser"),
    ("GET", "/admin/api-keys", f"{ADMIN}/ListApiKeys"),
    ("POST", "/admin/api-keys", f"{ADMIN}/CreateApiKey"),
    ("DELETE", "/admin/api-keys/k1", f"{ADMIN}/RevokeApiKey"),
    ("GET", "/admin/models", f"{ADMIN}/ListModels"),
    ("POST", "/admin/models/tiny-chat/start", f"{ADMIN}/StartModel"),
    ("POST", "/admin/models/tiny-chat/stop", f"{ADMIN}/StopModel"),
    ("POST", "/admin/backends/cpu-0/switch", f"{ADMIN}/SwitchBackend"),
    ("GET", "/admin/queue/tiny-chat", f"{ADMIN}/GetQueueStats"),
    ("GET", "/admin/queue/tiny-chat/series", f"{ADMIN}/GetQueueSeries"),
    ("GET", "/admin/crashes", f"{ADMIN}/ListCrashes"),
    ("GET", "/admin/requests", f"{ADMIN}/ListRequests"),
    ("GET", "/admin/models/tiny-chat/config", f"{ADMIN}/GetModelConfig"),
    ("PUT", "/admin/models/tiny-chat/config", f"{ADMIN}/UpdateModelConfig"),
    ("GET", "/admin/autoswitch", f"{ADMIN}/GetAutoSwitch"),
    ("PUT", "/admin/autoswitch", f"{ADMIN}/SetAutoSwitch"),
]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    cfg = parse_config({}, env={})
    gateway = Gateway(descriptor_set_path().read_bytes(), config_resolver(cfg))
    yield gateway
    await gateway.close()


async def test_documented_rest_surface_reaches_its_rpc(gateway: Gateway) -> None:
    reached = {}
    for method, path, _ in SURFACE:
        found = gateway.matcher.lookup(method, path)
        reached[(method, path)] = found.target.binding.rpc.path if found else None
    assert reached == {(method, path): f"/{rpc}" for method, path, rpc in SURFACE}


async def test_every_annotated_method_is_served(gateway: Gateway) -> None:
    _, bindings = load_bindings(descriptor_set_path().read_bytes())
    assert {r.binding.rpc.path for r in gateway.routes} == {b.rpc.path for b in bindings}
    assert {f"/{rpc}" for _, _, rpc in SURFACE} <= {r.binding.rpc.path for r in gateway.routes}


def test_only_router_and_admin_are_exposed_and_each_goes_to_its_configured_address() -> None:
    assert annotated_services(descriptor_set_path().read_bytes()) == [ADMIN, ROUTER]
    resolve = config_resolver(parse_config({"services": {"admin": {"port": 6000, "mesh_port": 6010}}}, env={}))
    assert resolve(ROUTER) == "127.0.0.1:50061", "with service identity the edge calls the mTLS mesh port"
    assert resolve(ADMIN) == "127.0.0.1:6010"
    plaintext = {"services": {"admin": {"port": 6000}}, "mesh_tls": {"mode": "plaintext"}}
    assert config_resolver(parse_config(plaintext, env={}))(ADMIN) == "127.0.0.1:6000"
    assert resolve("aigw.edge.v1.Nothing") is None
    assert resolve("acme.router.v1.RouterService") is None


async def test_streaming_and_raw_bindings_are_recognised(gateway: Gateway) -> None:
    by_rpc = {r.binding.rpc.path.rsplit("/", 1)[1]: r.binding for r in gateway.routes}
    assert by_rpc["CreateChatCompletion"].raw_response
    assert by_rpc["CreateChatCompletion"].request_is_http_body
    assert by_rpc["CreateChatCompletion"].rpc.server_streaming
    assert by_rpc["Ocr"].body_field_is_http_body
    assert by_rpc["IssueToken"].body_field_is_http_body
    assert by_rpc["StreamChat"].rpc.server_streaming
    assert not by_rpc["StreamChat"].raw_response
