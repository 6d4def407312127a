"""One gateway for the package: the deployment at GATEWAY_URL, or else the local mesh, started once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigw_server.runtime.config import RateLimit
from harness.mesh import Mesh
from harness.mesh_config import MeshSpec
from tests.e2e.conformance.contract import RateLimitRetry
from tests.e2e.conftest import ADMIN_PASSWORD, mesh_spec

TIMEOUT = 120.0


@dataclass(frozen=True)
class Gateway:
    """Where the edge is, how to log in as an operator, and which models to use."""

    url: str
    admin_username: str
    admin_password: str
    chat_model: str = ""
    ocr_model: str = ""
    local: bool = False
    admin_token: str = ""

    def client(self) -> httpx.Client:
        """A client of the edge that waits out rate limits (a deployment may have tight ones)."""
        return httpx.Client(base_url=self.url, timeout=TIMEOUT, transport=RateLimitRetry())

    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.admin_token)


@dataclass(frozen=True)
class User:
    """An ordinary (role `user`) account made for this run."""

    username: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def login(client: httpx.Client, username: str, password: str) -> dict[str, Any]:
    reply = client.post("/auth/token", data={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def first_model(client: httpx.Client, token: str, kind: str) -> str:
    """The first loaded model of `kind` ("chat" or "ocr") the deployment lists."""
    models = client.get("/admin/models", headers=bearer(token)).json()["models"]
    names = [m["model"] for m in models if m["kind"] == kind and m["state"] == "loaded"]
    assert names, f"the deployment has no loaded {kind} model; set GATEWAY_{kind.upper()}_MODEL"
    name: str = names[0]
    return name


def with_session(gateway: Gateway) -> Gateway:
    """The gateway with an admin token, and its models found when the environment did not name them."""
    with gateway.client() as client:
        token = login(client, gateway.admin_username, gateway.admin_password)["access_token"]
        chat = gateway.chat_model or first_model(client, token, "chat")
        ocr = gateway.ocr_model or first_model(client, token, "ocr")
    return Gateway(gateway.url, gateway.admin_username, gateway.admin_password, chat, ocr, gateway.local, token)


def deployed_gateway(url: str) -> Gateway:
    username, password = os.environ.get("GATEWAY_ADMIN_USERNAME", "admin"), os.environ.get("GATEWAY_ADMIN_PASSWORD", "")
    assert password, "GATEWAY_URL needs GATEWAY_ADMIN_PASSWORD (and GATEWAY_ADMIN_USERNAME unless it is 'admin')"
    chat, ocr = os.environ.get("GATEWAY_CHAT_MODEL", ""), os.environ.get("GATEWAY_OCR_MODEL", "")
    return with_session(Gateway(url.rstrip("/"), username, password, chat, ocr))


def local_mesh(data: Path, tiny_model_dir: Path) -> MeshSpec:
    """The e2e mesh with a rate limit the whole package's requests stay under."""
    return replace(mesh_spec(data, tiny_model_dir), rate_limit=RateLimit(requests_per_minute=60000, burst=1000))


@pytest.fixture(scope="package")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The edge under test: GATEWAY_URL as given, or the local mesh started once for the whole package."""
    url = os.environ.get("GATEWAY_URL", "")
    if url:
        yield deployed_gateway(url)
        return
    root = tmp_path_factory.mktemp("conformance")
    tiny_model_dir: Path = request.getfixturevalue("tiny_model_dir")  # only built when the local mesh is used
    mesh = Mesh(local_mesh(root / "data", tiny_model_dir).write(root / "config.yaml"))
    try:
        mesh.start(timeout=150)
        yield with_session(Gateway(mesh.edge_url, "admin", ADMIN_PASSWORD, "tiny-chat", "tesseract", local=True))
    finally:
        mesh.stop()


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    """A fresh HTTP client of the edge."""
    with gateway.client() as client:
        yield client


@pytest.fixture(scope="package")
def user(gateway: Gateway) -> Iterator[User]:
    """A `user`-role account for this run, deleted at the end."""
    name, password = f"conf-{uuid.uuid4().hex[:10]}", f"conformance-{uuid.uuid4().hex}"
    with gateway.client() as client:
        made = client.post("/admin/users", headers=gateway.admin, json={"username": name, "password": password, "role": "user"})
        assert made.status_code == 200, made.text
        try:
            yield User(name, password, login(client, name, password)["access_token"])
        finally:
            client.delete(f"/admin/users/{name}", headers=gateway.admin)


@pytest.fixture
def client_id() -> str:
    """An X-Client-ID no other test uses, so history filtered by it shows only this test's requests."""
    return f"conf-client-{uuid.uuid4().hex[:12]}"
