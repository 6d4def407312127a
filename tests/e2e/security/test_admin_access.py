"""Every admin REST path refuses user credentials with 403 and no credential with 401, and such calls change nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from aigw_server.edge.service import descriptor_set_path
from tests.e2e.security.conftest import SecureMesh
from tests.e2e.security.helpers import PERMISSION_DENIED, UNAUTHENTICATED, refusal

ADMIN_SERVICE = "AdminService"
OPEN_METHODS = frozenset({"IssueToken", "RevokeToken"})
PATH_VALUES = {"model": "tiny-chat", "username": "admin", "key_id": "0123456789abcdef", "backend": "cpu-0"}
BODIES: dict[str, object] = {
    "CreateUser": {"username": "mallory-sec", "password": "mallory-password-123", "role": "admin"},
    "UpdateUser": {"role": "user", "disabled": True},
    "CreateApiKey": {"name": "mallory", "role": "admin"},
    "SwitchBackend": {"model": "tiny-chat", "force": True},
    "UpdateModelConfig": {"expected_version": 0, "patch": {"enabled": False, "max_waiting": 0}},
    "SetAutoSwitch": {"enabled": True},
}
_VARIABLE = re.compile(r"\{([a-z_.]+)(=[^}]*)?\}")


def admin_routes() -> Iterator[tuple[str, str, str, str]]:
    """(rpc, HTTP method, path, body field) of every HTTP binding of AdminService, read from the descriptor set."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set_path().read_bytes())
    for file in fds.file:
        for service in file.service:
            if service.name != ADMIN_SERVICE:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb is None or verb == "custom":
                        continue
                    path = _VARIABLE.sub(lambda m: PATH_VALUES[m.group(1)], getattr(binding, verb))
                    yield method.name, verb.upper(), path, binding.body


ROUTES = sorted(r for r in admin_routes() if r[0] not in OPEN_METHODS)


def test_the_route_list_covers_the_admin_surface() -> None:
    paths = {(verb, path) for _, verb, path, _ in ROUTES}
    for expected in [
        ("GET", "/admin/models"),
        ("GET", "/admin/crashes"),
        ("PUT", "/admin/models/tiny-chat/config"),
        ("POST", "/admin/models/tiny-chat/start"),
        ("POST", "/admin/models/tiny-chat/stop"),
        ("GET", "/admin/queue/tiny-chat"),
        ("GET", "/admin/queue/tiny-chat/series"),
        ("GET", "/admin/users"),
        ("POST", "/admin/api-keys"),
        ("GET", "/admin/requests"),
    ]:
        assert expected in paths
    assert len(ROUTES) >= 18


@pytest.fixture(scope="module")
def user_api_key(secure: SecureMesh) -> str:
    """An API key with the user role (made by the admin for itself: the role is what counts)."""
    with secure.client() as client:
        reply = client.post("/admin/api-keys", json={"name": "user-role-key", "role": "user"}, headers=secure.admin)
    assert reply.status_code == 200, reply.text
    key: str = reply.json()["api_key"]
    return key


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES])
def test_a_user_token_gets_403_on_every_admin_path(secure: SecureMesh, route: tuple[str, str, str, str]) -> None:
    rpc, verb, path, body = route
    with secure.client() as client:
        reply = client.request(verb, path, json=BODIES.get(rpc, {}) if body else None, headers=secure.bearer(secure.token()))
    refusal(reply, 403, PERMISSION_DENIED, "admin role")


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES])
def test_a_user_api_key_gets_403_on_every_admin_path(
    secure: SecureMesh, user_api_key: str, route: tuple[str, str, str, str]
) -> None:
    rpc, verb, path, body = route
    with secure.client() as client:
        reply = client.request(verb, path, json=BODIES.get(rpc, {}) if body else None, headers=secure.bearer(user_api_key))
    refusal(reply, 403, PERMISSION_DENIED, "admin role")


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES])
def test_no_credential_gets_401_on_every_admin_path(secure: SecureMesh, route: tuple[str, str, str, str]) -> None:
    rpc, verb, path, body = route
    with secure.client() as client:
        reply = client.request(verb, path, json=BODIES.get(rpc, {}) if body else None)
    refusal(reply, 401, UNAUTHENTICATED)


def test_refused_admin_calls_changed_nothing(secure: SecureMesh) -> None:
    with secure.client() as client:
        users = client.get("/admin/users", headers=secure.admin).json()["users"]
        config = client.get("/admin/models/tiny-chat/config", headers=secure.admin).json()["config"]
        models = client.get("/admin/models", headers=secure.admin).json()["models"]
        switch = client.get("/admin/autoswitch", headers=secure.admin).json()
    assert "mallory-sec" not in {u["username"] for u in users}
    admin = next(u for u in users if u["username"] == "admin")
    assert admin["role"] == "admin"
    assert not admin["disabled"]
    assert config["enabled"] is True
    assert config["max_waiting"] != 0
    assert next(m for m in models if m["model"] == "tiny-chat")["state"] == "loaded"
    assert switch["enabled"] is False
