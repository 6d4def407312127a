"""One mesh for the whole security package: HS256 and RS256 tokens accepted, a small login limit, a generous rate limit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aigw_server.runtime.config import JwtKey, RateLimit
from harness.mesh import Mesh
from harness.mesh_config import ChatModel, MeshSpec
from tests.e2e.conftest import ADMIN_PASSWORD, JWT_SECRET, mesh_spec

RSA_KID = "security-rsa"
LOGIN_LIMIT = 5
FUZZ_MODEL = "fuzz-chat"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims_for(subject: str, role: str, **overrides: Any) -> dict[str, Any]:
    """Access-token claims as the admin service issues them, with `overrides` applied (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iss": "aigw",
        "aud": "aigw",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "client_ids": [],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@dataclass
class SecureMesh:
    """The running mesh plus what the tests need to talk to it: an admin token, the RSA key, token minting."""

    mesh: Mesh
    rsa_key: rsa.RSAPrivateKey
    admin_token: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.mesh.edge_url

    @property
    def logs(self) -> Path:
        return Path(self.mesh.cfg.data_dir) / "logs"

    def client(self, source_ip: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client of the edge whose connections come from `source_ip` (any 127.0.0.0/8 address)."""
        transport = httpx.HTTPTransport(local_address=source_ip, retries=0)
        return httpx.Client(base_url=self.url, timeout=60, transport=transport)

    def token(self, subject: str = "sec-user", role: str = "user", **overrides: Any) -> str:
        """An access token signed with the mesh's HMAC secret."""
        return jwt.encode(claims_for(subject, role, **overrides), JWT_SECRET, algorithm="HS256")

    def rs256_token(self, subject: str = "sec-user", role: str = "user", kid: str = RSA_KID, **overrides: Any) -> str:
        """An access token signed with the RSA key the mesh trusts under `RSA_KID`."""
        return jwt.encode(claims_for(subject, role, **overrides), self.rsa_key, algorithm="RS256", headers={"kid": kid})

    def bearer(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.bearer(self.admin_token)

    def assert_healthy(self) -> None:
        """/health answers promptly, every gRPC service is SERVING, and no supervised process was restarted."""
        started = time.monotonic()
        assert httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 3.0
        for name, address in self.mesh.grpc_addresses().items():
            assert self.mesh.health(name, address, timeout=3) == "SERVING", name
        assert self.mesh.pids() == self.pids, "a supervised process died and was restarted"


def security_mesh(data: Path, tiny_model_dir: Path, pem_file: Path) -> MeshSpec:
    """The e2e mesh that also trusts RS256 tokens of `RSA_KID`, limits logins, and serves FUZZ_MODEL nowhere."""
    base = mesh_spec(data, tiny_model_dir)
    return replace(
        base,
        auth=replace(
            base.auth,
            algorithms=("HS256", "RS256"),
            public_keys=(JwtKey(RSA_KID, "RS256", str(pem_file)),),
            login_attempts_per_minute=LOGIN_LIMIT,
        ),
        rate_limit=RateLimit(requests_per_minute=60000, burst=1000),
        models=(*base.models, ChatModel(FUZZ_MODEL, max_concurrent=1)),
    )


TOKEN_SUBJECTS = ("sec-user", "log-user", "injection-victim", "fuzz-user", "mallory", "bob", "alice", "carol")
"""Users the tests mint tokens for (a token naming no user is refused); admins, so each token's own role counts."""


def create_token_subjects(running: SecureMesh) -> None:
    with running.client() as client:
        for name in TOKEN_SUBJECTS:
            body = {"username": name, "password": f"{name}-password-123", "role": "admin"}
            reply = client.post("/admin/users", json=body, headers=running.admin)
            assert reply.status_code == 200, reply.text


def admin_login(url: str) -> str:
    reply = httpx.post(f"{url}/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["access_token"]
    return token


@pytest.fixture(scope="package")
def secure(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[SecureMesh]:
    """The whole mesh, started once for the security package."""
    root = tmp_path_factory.mktemp("security")
    key = new_rsa_key()
    pem = root / "jwt-rs256.pem"
    pem.write_bytes(public_pem(key))
    config = security_mesh(root / "data", tiny_model_dir, pem).write(root / "config.yaml")
    running = SecureMesh(Mesh(config), key)
    try:
        running.mesh.start(timeout=150)
        running.admin_token = admin_login(running.url)
        create_token_subjects(running)
        running.pids = running.mesh.pids()
        yield running
    finally:
        running.mesh.stop()
