"""Token verification refuses every forged, stale or misdirected credential with the reason."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aigw_server.runtime.auth import (
    Account,
    Authenticator,
    Principal,
    TokenSigner,
    TokenVerifier,
    bearer_credential,
    hash_secret,
    new_api_key,
    parse_api_key,
)
from aigw_server.runtime.config import AuthConfig, JwtKey
from aigw_server.runtime.errors import PermissionDenied, Unauthenticated

SECRET = "s" * 48
CFG = AuthConfig(jwt_secret=SECRET)


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "role": "user",
        "iss": "aigw",
        "aud": "aigw",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "typ": "access",
    }
    base.update(over)
    return base


def verifier(cfg: AuthConfig = CFG) -> TokenVerifier:
    return TokenVerifier(cfg, SECRET)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_gives_principal() -> None:
    token, _ = TokenSigner(CFG, SECRET).issue_access("alice", "user", ("app-1",))
    p = verifier().principal(token)
    assert (p.subject, p.role, p.client_ids, p.via) == ("alice", "user", ("app-1",), "jwt")


# Claims are built when the test runs (times relative to then), not when the module is collected.
@pytest.mark.parametrize(
    ("make_claims", "reason"),
    [
        (lambda: claims(exp=int(time.time()) - 120), "expired"),
        (lambda: claims(nbf=int(time.time()) + 600), "not yet valid"),
        (lambda: claims(aud="other"), "audience"),
        (lambda: claims(iss="evil"), "issuer"),
        (lambda: claims(role="root"), "role"),
        (lambda: claims(iat=int(time.time()) + 3600, nbf=int(time.time()) - 1), "future|not yet valid"),
        (lambda: claims(typ="refresh"), "not an access token"),
        (lambda: claims(typ=None), "not an access token"),
        (lambda: claims(exp=int(time.time()) + 100 * 365 * 86400), "lifetime"),
        (lambda: claims(exp=int(time.time()) + 3600), "lifetime"),
    ],
)
def test_bad_claims_are_refused(make_claims: Callable[[], dict[str, Any]], reason: str) -> None:
    token = jwt.encode({k: v for k, v in make_claims().items() if v is not None}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=reason):
        verifier().principal(token)


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    with pytest.raises(Unauthenticated, match="algorithm 'none'"):
        verifier().principal(token)


def test_forged_signature_is_refused() -> None:
    token = jwt.encode(claims(role="admin"), "x" * 48, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="signature"):
        verifier().principal(token)


def test_hs_rs_confusion_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    cfg = AuthConfig(
        jwt_secret=SECRET, algorithms=("HS256", "RS256"), public_keys=(JwtKey("k1", "RS256", str(tmp_path / "pub.pem")),)
    )
    good = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})
    assert TokenVerifier(cfg, SECRET).principal(good).subject == "alice"
    # The public key used as an HMAC secret must not verify: HS tokens only ever use the configured secret.
    forged = jwt.encode(claims(role="admin"), "not-the-secret-" + pem.decode()[:20], algorithm="HS256")
    with pytest.raises(Unauthenticated):
        TokenVerifier(cfg, SECRET).principal(forged)
    unknown_kid = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(Unauthenticated, match="unknown key"):
        TokenVerifier(cfg, SECRET).principal(unknown_kid)


def test_oversized_and_malformed_tokens() -> None:
    with pytest.raises(Unauthenticated, match="too large"):
        verifier().principal("a" * 9000)
    with pytest.raises(Unauthenticated, match="malformed"):
        verifier().principal("not-a-jwt")


def test_bearer_parsing() -> None:
    assert bearer_credential("Bearer abc") == "abc"
    with pytest.raises(Unauthenticated, match="missing"):
        bearer_credential("")
    with pytest.raises(Unauthenticated, match="malformed"):
        bearer_credential("Basic abc")


def test_api_keys_round_trip() -> None:
    key_id, secret, full = new_api_key()
    assert parse_api_key(full) == (key_id, secret)
    assert parse_api_key("aigw_short_x") is None
    assert parse_api_key("sk-whatever") is None
    assert hash_secret(secret) != secret
    assert len(hash_secret(secret)) == 64


def test_client_id_rule() -> None:
    user = Principal("alice", "user", "jwt", ("app-1",))
    assert user.client_id("") == "alice"
    assert user.client_id("app-1") == "app-1"
    with pytest.raises(PermissionDenied):
        user.client_id("bob")
    assert Principal("root", "admin", "jwt").client_id("anyone") == "anyone"


class Accounts:
    """A user table that tests change between calls."""

    def __init__(self, **users: Account) -> None:
        self.users = users
        self.calls = 0

    async def __call__(self, name: str) -> Account | None:
        self.calls += 1
        return self.users.get(name)


async def test_a_token_acts_as_its_subject_is_now() -> None:
    accounts = Accounts(alice=Account("admin", False))
    auth = Authenticator(verifier(), None, users=accounts, user_cache_seconds=0)
    token = jwt.encode(claims(role="admin"), SECRET, algorithm="HS256")
    assert (await auth.authenticate(f"Bearer {token}")).role == "admin"
    accounts.users["alice"] = Account("user", False)
    assert (await auth.authenticate(f"Bearer {token}")).role == "user", "a demoted admin kept the admin role"
    accounts.users["alice"] = Account("user", True)
    with pytest.raises(Unauthenticated, match="disabled"):
        await auth.authenticate(f"Bearer {token}")
    del accounts.users["alice"]
    with pytest.raises(Unauthenticated, match="not a user"):
        await auth.authenticate(f"Bearer {token}")


async def test_the_account_is_remembered_for_at_most_the_cache_time() -> None:
    now = [100.0]
    accounts = Accounts(alice=Account("user", False))
    auth = Authenticator(verifier(), None, users=accounts, user_cache_seconds=0.5, clock=lambda: now[0])
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    await auth.authenticate(f"Bearer {token}")
    accounts.users["alice"] = Account("user", True)
    now[0] += 0.4
    await auth.authenticate(f"Bearer {token}")
    now[0] += 0.2
    with pytest.raises(Unauthenticated, match="disabled"):
        await auth.authenticate(f"Bearer {token}")
    assert accounts.calls == 2


async def test_a_burst_of_one_client_looks_its_account_up_once() -> None:
    accounts = Accounts(alice=Account("user", False))
    auth = Authenticator(verifier(), None, users=accounts, user_cache_seconds=0.5)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    await asyncio.gather(*(auth.authenticate(f"Bearer {token}") for _ in range(50)))
    assert accounts.calls == 1
