"""Forged, expired, misdirected, oversized and malformed credentials are refused on both chat endpoints with 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest

from tests.e2e.conftest import JWT_SECRET
from tests.e2e.security.conftest import RSA_KID, SecureMesh, claims_for, new_rsa_key, public_pem
from tests.e2e.security.helpers import CHAT, OPENAI_CHAT, PERMISSION_DENIED, UNAUTHENTICATED, raw_get, refusal

ENDPOINTS = {"/api/chat": CHAT, "/v1/chat/completions": OPENAI_CHAT}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def hmac_signed(key: bytes, claims: dict[str, object], kid: str = "", alg: str = "HS256") -> str:
    """An HMAC-signed JWT made by hand: any bytes as the secret (PyJWT refuses a PEM as an HMAC key; an attacker does not)."""
    header: dict[str, object] = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def tampered(token: str) -> str:
    """The token with its role claim raised to admin and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def resigned(token: str) -> str:
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{b64(b'0' * 32)}"


Attack = Callable[[SecureMesh], str]

ATTACKS: dict[str, tuple[Attack, str]] = {
    "alg none": (lambda m: unsigned({"alg": "none", "typ": "JWT"}, claims_for("sec-user", "admin")), "algorithm 'none'"),
    "alg None": (lambda m: unsigned({"alg": "None", "typ": "JWT"}, claims_for("sec-user", "admin")), "is not accepted"),
    "alg missing": (lambda m: unsigned({"typ": "JWT"}, claims_for("sec-user", "admin"), b"x" * 32), "is not accepted"),
    "HS256 signed with the RS256 public key": (
        lambda m: hmac_signed(public_pem(m.rsa_key), claims_for("sec-user", "admin"), RSA_KID),
        "signature is invalid",
    ),
    "HS256 with a wrong secret": (
        lambda m: jwt.encode(claims_for("sec-user", "admin"), "not-the-secret-" + "y" * 40, algorithm="HS256"),
        "signature is invalid",
    ),
    "HS512 not allowed": (
        lambda m: hmac_signed(JWT_SECRET.encode(), claims_for("sec-user", "user"), alg="HS512"),
        "'HS512' is not accepted",
    ),
    "RS256 by an unknown key with a trusted kid": (
        lambda m: jwt.encode(claims_for("sec-user", "admin"), new_rsa_key(), algorithm="RS256", headers={"kid": RSA_KID}),
        "signature is invalid",
    ),
    "RS256 with an unknown kid": (lambda m: m.rs256_token(kid="someone-else"), "unknown key"),
    "forged signature": (lambda m: resigned(m.token()), "signature is invalid"),
    "payload changed after signing": (lambda m: tampered(m.token()), "signature is invalid"),
    "expired": (lambda m: m.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, nbf=None), "expired"),
    "not yet valid": (lambda m: m.token(nbf=int(time.time()) + 3600), "not yet valid"),
    "wrong audience": (lambda m: m.token(aud="another-service"), "audience"),
    "wrong issuer": (lambda m: m.token(iss="https://evil.example"), "issuer"),
    "no expiry": (lambda m: m.token(exp=None), "exp"),
    "refresh token used as access token": (lambda m: m.token(typ="refresh"), "not an access token"),
    "oversized (8.5 KB)": (lambda m: m.token(padding="p" * 8300), "too large"),
    "oversized (20 KB)": (lambda m: m.token(padding="p" * 20_000), "too large"),
    "not a JWT": (lambda m: "not-a-jwt", "malformed token"),
    "header not base64 JSON": (lambda m: "%%%." + m.token().split(".", 1)[1], "malformed token"),
    "API-key shaped garbage": (lambda m: "aigw_0123456789abcdef_" + "s" * 43, "invalid or revoked"),
}


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_bad_token_is_refused_with_401(secure: SecureMesh, path: str, attack: str) -> None:
    make, reason = ATTACKS[attack]
    with secure.client() as client:
        reply = client.post(path, json=ENDPOINTS[path], headers=secure.bearer(make(secure)))
    refusal(reply, 401, UNAUTHENTICATED, reason)


MALFORMED_AUTHORIZATION = {
    "missing": ({}, "missing credentials"),
    "basic scheme": ({"authorization": "Basic YWRtaW46cGFzc3dvcmQ="}, "malformed Authorization header"),
    "bearer without credential": ({"authorization": "Bearer    "}, "malformed Authorization header"),
    "token without scheme": ({"authorization": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}, "malformed Authorization header"),
    "empty x-api-key": ({"x-api-key": "   "}, ""),
    "malformed x-api-key": ({"x-api-key": "letmein"}, "malformed API key"),
}


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
@pytest.mark.parametrize("case", sorted(MALFORMED_AUTHORIZATION))
def test_a_missing_or_malformed_credential_is_refused_with_401(secure: SecureMesh, path: str, case: str) -> None:
    headers, reason = MALFORMED_AUTHORIZATION[case]
    body = json.dumps(ENDPOINTS[path]).encode()
    reply = raw_get(secure.url, path, {**headers, "content-type": "application/json"}, method="POST", body=body)
    refusal(reply, 401, UNAUTHENTICATED, reason)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_a_signed_token_with_an_unknown_role_is_refused_with_403(secure: SecureMesh, path: str) -> None:
    with secure.client() as client:
        reply = client.post(path, json=ENDPOINTS[path], headers=secure.bearer(secure.token(role="superuser")))
    refusal(reply, 403, PERMISSION_DENIED, "may not use this API")


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_a_valid_token_of_each_accepted_algorithm_is_served(secure: SecureMesh, path: str, algorithm: str) -> None:
    """The control: the same request with a good token gets through, so the refusals above are about the token."""
    token = secure.token() if algorithm == "HS256" else secure.rs256_token()
    body = {**ENDPOINTS[path], "async": True} if path == "/api/chat" else ENDPOINTS[path]
    with secure.client() as client:
        reply = client.post(path, json=body, headers={**secure.bearer(token), "prefer": "respond-async"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["request_id"]
