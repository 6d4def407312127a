"""The gate: JWTs and API keys (with the bounded revocation cache), X-Client-ID, rate limit, visibility."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from aigw_server.router.gate import Caller, CallMeta, Gate
from aigw_server.router.ratelimit import RateLimiter
from aigw_server.runtime.auth import (
    API_KEY_CACHE_SECONDS,
    TOKEN_CACHE_SECONDS,
    Authenticator,
    Principal,
    TokenSigner,
    TokenVerifier,
    api_key_principal,
    hash_secret,
    new_api_key,
)
from aigw_server.runtime.config import AuthConfig, RateLimit, RateLimitConfig
from aigw_server.runtime.errors import NotFound, PermissionDenied, ResourceExhausted, Unauthenticated

SECRET = "k" * 48
CFG = AuthConfig(jwt_secret=SECRET, access_token_ttl_seconds=86400)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class KeyStore:
    """Stands in for IdentityService.LookupApiKey: active keys by (id, hash), with a call count."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], Principal] = {}
        self.lookups = 0

    async def lookup(self, key_id: str, secret_hash: str) -> Principal:
        self.lookups += 1
        try:
            return self.active[(key_id, secret_hash)]
        except KeyError:
            raise Unauthenticated("API key is invalid or revoked") from None


def issue_key(store: KeyStore, subject: str = "carol", role: str = "user") -> str:
    key_id, secret, full = new_api_key()
    store.active[(key_id, hash_secret(secret))] = Principal(subject, role, "api_key", ("app-9",), key_id)
    return full


def gate(store: KeyStore | None = None, clock: Clock | None = None, limits: RateLimitConfig | None = None) -> Gate:
    lookup = (store or KeyStore()).lookup
    auth = Authenticator(TokenVerifier(CFG, SECRET), lookup, clock=clock or Clock())
    return Gate(auth, RateLimiter(limits or RateLimitConfig()))


def token(**over: Any) -> str:
    now = int(time.time())
    # A day's validity: parametrized tokens are made at collection, possibly long before their test runs.
    claims = {
        "sub": "alice",
        "role": "user",
        "iss": "aigw",
        "aud": "aigw",
        "iat": now,
        "nbf": now,
        "exp": now + 86400,
        "typ": "access",
        **over,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_jwt_caller_is_accounted_to_the_subject_or_an_allowed_client() -> None:
    signed, _ = TokenSigner(CFG, SECRET).issue_access("alice", "user", ("app-1",))
    g = gate()
    assert (await g.identify(CallMeta(authorization=f"Bearer {signed}"))).client_id == "alice"
    assert (await g.identify(CallMeta(authorization=f"Bearer {signed}", client_id="app-1"))).client_id == "app-1"
    with pytest.raises(PermissionDenied, match="X-Client-ID 'app-2'"):
        await g.identify(CallMeta(authorization=f"Bearer {signed}", client_id="app-2"))


async def test_signed_token_with_an_unknown_role_is_permission_denied() -> None:
    with pytest.raises(PermissionDenied, match="role 'viewer'"):
        await gate().identify(CallMeta(authorization=f"Bearer {token(role='viewer')}"))


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (CallMeta(), "missing credentials"),
        (CallMeta(authorization="Basic abc"), "malformed Authorization"),
        (CallMeta(authorization="Bearer not-a-jwt"), "malformed token"),
        (CallMeta(api_key="not-a-key"), "malformed API key"),
        (CallMeta(authorization="Bearer " + token(role=None)), "no valid role"),
    ],
)
async def test_bad_credentials_are_unauthenticated(meta: CallMeta, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        await gate().identify(meta)


async def test_api_key_in_either_header_acts_as_its_owner() -> None:
    store = KeyStore()
    key = issue_key(store)
    g = gate(store)
    for meta in (CallMeta(authorization=f"Bearer {key}"), CallMeta(api_key=key)):
        caller = await g.identify(meta)
        assert (caller.principal.subject, caller.principal.via, caller.client_id) == ("carol", "api_key", "carol")
    assert (await g.identify(CallMeta(api_key=key, client_id="app-9"))).client_id == "app-9"


async def test_revoked_key_stops_working_once_the_cache_entry_lapses() -> None:
    store, clock = KeyStore(), Clock()
    key = issue_key(store)
    g = gate(store, clock)
    await g.identify(CallMeta(api_key=key))
    store.active.clear()
    clock.now += API_KEY_CACHE_SECONDS - 0.5
    await g.identify(CallMeta(api_key=key))
    assert store.lookups == 1
    clock.now += 1.0
    with pytest.raises(Unauthenticated, match="invalid or revoked"):
        await g.identify(CallMeta(api_key=key))


async def test_unknown_keys_are_not_remembered() -> None:
    store = KeyStore()
    g = gate(store)
    _, _, unknown = new_api_key()
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await g.identify(CallMeta(api_key=unknown))
    assert store.lookups == 2


async def test_admit_applies_the_rate_limit_of_the_accounted_client() -> None:
    signed, _ = TokenSigner(CFG, SECRET).issue_access("alice", "user", ("app-1",))
    g = gate(limits=RateLimitConfig(default=RateLimit(60, 2)))
    bearer = f"Bearer {signed}"
    for _ in range(2):
        await g.admit(CallMeta(authorization=bearer))
    with pytest.raises(ResourceExhausted):
        await g.admit(CallMeta(authorization=bearer))
    await g.admit(CallMeta(authorization=bearer, client_id="app-1"))


def test_users_see_only_their_own_requests_and_admins_all() -> None:
    alice = Caller(Principal("alice", "user", "jwt"), "alice")
    admin = Caller(Principal("root", "admin", "jwt"), "root")
    Gate.check_visible(alice, "r1", "alice")
    Gate.check_visible(admin, "r1", "alice")
    with pytest.raises(NotFound, match="request r1 not found"):
        Gate.check_visible(alice, "r1", "bob")


def test_everyone_lists_only_their_own_history_admins_too() -> None:
    assert Gate.own_subject(Caller(Principal("alice", "user", "jwt"), "app-1")) == "alice"
    assert Gate.own_subject(Caller(Principal("root", "admin", "jwt"), "anyone")) == "root"
    with pytest.raises(PermissionDenied):
        Gate.own_subject(Caller(Principal("", "user", "api_key"), "batch"))


@pytest.mark.parametrize(
    ("prefer", "expected"), [("respond-async", True), ("wait=10, Respond-Async", True), ("", False), ("return=minimal", False)]
)
def test_prefer_header(prefer: str, expected: bool) -> None:
    assert CallMeta(prefer=prefer).prefers_async is expected


class CountingVerifier(TokenVerifier):
    """A real verifier that counts signature checks."""

    checks = 0

    def verify(self, token: str, *, token_type: str = "access") -> dict[str, Any]:
        self.checks += 1
        return super().verify(token, token_type=token_type)


async def test_verified_tokens_are_remembered_no_longer_than_their_expiry() -> None:
    clock = Clock()
    verifier = CountingVerifier(CFG, SECRET)
    auth = Authenticator(verifier, None, clock=clock)
    long_lived, short_lived = token(exp=int(time.time()) + 3600), token(exp=int(time.time()) + 5)
    for _ in range(3):
        await auth.authenticate(f"Bearer {long_lived}")
        await auth.authenticate(f"Bearer {short_lived}")
    assert verifier.checks == 2
    clock.now += 6
    await auth.authenticate(f"Bearer {long_lived}")
    await auth.authenticate(f"Bearer {short_lived}")
    assert verifier.checks == 3
    clock.now += TOKEN_CACHE_SECONDS
    await auth.authenticate(f"Bearer {long_lived}")
    assert verifier.checks == 4


def test_an_api_key_acts_with_its_role_capped_at_its_owners() -> None:
    assert api_key_principal("k1", "erin", "admin", ("admin", False, ("app",))) == Principal(
        "erin", "admin", "api_key", ("app",), "k1"
    )
    assert api_key_principal("k1", "erin", "admin", ("user", False, ())).role == "user"
    with pytest.raises(Unauthenticated):
        api_key_principal("k1", "erin", "user", ("user", True, ()))
