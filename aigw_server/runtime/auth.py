"""Credentials: JWT verification and issuance, API keys, and the principal a call acts as."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import jwt
from jwt.algorithms import get_default_algorithms

from aigw_server.runtime.config import AuthConfig, ConfigError, GatewayConfig
from aigw_server.runtime.errors import PermissionDenied, Unauthenticated

ROLES = ("user", "admin")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"})
MAX_TOKEN_BYTES = 8192
API_KEY_PREFIX = "aigw_"


@dataclass(frozen=True)
class Principal:
    """Who a call acts as."""

    subject: str
    role: str
    via: Literal["jwt", "api_key"]
    client_ids: tuple[str, ...] = ()
    token_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def client_id(self, requested: str) -> str:
        """The client id a request is accounted to (the X-Client-ID rule).

        No X-Client-ID: the subject itself. Otherwise it must be the subject, one of the user's
        allowed client ids, or anything for an admin; else PERMISSION_DENIED.
        """
        if not requested or requested == self.subject:
            return self.subject
        if self.is_admin or requested in self.client_ids:
            return requested
        raise PermissionDenied(f"X-Client-ID {requested!r} is not allowed for {self.subject!r}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this operation needs the admin role")


def resolve_jwt_secret(cfg: GatewayConfig) -> str:
    """The HMAC secret: config/JWT_SECRET, else the one the launcher generated in the data dir."""
    if cfg.auth.jwt_secret:
        return cfg.auth.jwt_secret
    generated = Path(cfg.data_dir) / "secrets" / "jwt_secret"
    if generated.exists():
        return generated.read_text().strip()
    if HMAC_ALGORITHMS & set(cfg.auth.algorithms):
        raise ConfigError("auth.jwt_secret: set JWT_SECRET (or run through the launcher, which generates one)")
    return ""


def _load_public_keys(cfg: AuthConfig) -> dict[str, tuple[str, Any]]:
    keys: dict[str, tuple[str, Any]] = {}
    algorithms = get_default_algorithms()
    for entry in cfg.public_keys:
        pem = Path(entry.pem_file).read_bytes()
        keys[entry.kid] = (entry.algorithm, algorithms[entry.algorithm].prepare_key(pem))
    if cfg.jwks_file:
        jwks = json.loads(Path(cfg.jwks_file).read_text())
        for jwk in jwt.PyJWKSet.from_dict(jwks).keys:
            if jwk.key_id is None or jwk.algorithm_name is None:
                raise ConfigError("auth.jwks_file: every key needs 'kid' and 'alg'")
            keys[jwk.key_id] = (jwk.algorithm_name, jwk.key)
    return keys


class TokenVerifier:
    """Verifies access tokens: size, algorithm allow-list (never `none`), signature, exp, nbf, iat skew, iss, aud, role."""

    def __init__(self, cfg: AuthConfig, secret: str) -> None:
        self.cfg = cfg
        self.secret = secret
        self.allowed = frozenset(a for a in cfg.algorithms if a != "none")
        self.public_keys = _load_public_keys(cfg)

    def _key_for(self, header: dict[str, Any]) -> tuple[str, Any]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.allowed:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        if alg in HMAC_ALGORITHMS:
            if not self.secret:
                raise Unauthenticated("HMAC tokens are not accepted here")
            return alg, self.secret
        kid = header.get("kid", "")
        entry = self.public_keys.get(kid) if isinstance(kid, str) else None
        if entry is None or entry[0] != alg:
            raise Unauthenticated("token signed with an unknown key")
        return entry

    def verify(self, token: str, *, token_type: str = "access") -> dict[str, Any]:
        """Returns the verified claims, or raises Unauthenticated with the reason."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        alg, key = self._key_for(header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.cfg.audience,
                issuer=self.cfg.issuer,
                leeway=self.cfg.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is wrong") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is wrong") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat > time.time() + self.cfg.max_iat_skew_seconds:
            raise Unauthenticated("token issued in the future")
        if claims.get("typ") != token_type:
            raise Unauthenticated(f"not an {token_type} token")
        lifetime = self.cfg.access_token_ttl_seconds if token_type == "access" else self.cfg.refresh_token_ttl_seconds
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp - min(float(iat), time.time()) > lifetime + self.cfg.leeway_seconds:
            raise Unauthenticated("token lifetime is longer than this gateway issues")
        return claims

    def principal(self, token: str) -> Principal:
        """Verifies an access token and returns who it acts as."""
        return self.principal_of(self.verify(token))

    def principal_of(self, claims: dict[str, Any]) -> Principal:
        """Who verified access-token claims act as."""
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthenticated("token has no valid role")
        client_ids = claims.get("client_ids", [])
        if not isinstance(client_ids, list) or not all(isinstance(c, str) for c in client_ids):
            raise Unauthenticated("token has malformed client_ids")
        return Principal(str(claims["sub"]), str(role), "jwt", tuple(client_ids), str(claims.get("jti", "")))


class TokenSigner:
    """Issues tokens with the configured HMAC secret (or a private key for RS/ES deployments)."""

    def __init__(self, cfg: AuthConfig, secret: str, algorithm: str = "HS256", private_key: Any = None, kid: str = "") -> None:
        if algorithm in HMAC_ALGORITHMS and not secret:
            raise ConfigError("auth.jwt_secret: required to issue HMAC tokens")
        self.cfg = cfg
        self.algorithm = algorithm
        self.key = secret if algorithm in HMAC_ALGORITHMS else private_key
        self.kid = kid

    def issue(self, subject: str, role: str, ttl_seconds: int, token_type: str = "access", **extra: Any) -> tuple[str, str]:
        """Returns (token, jti)."""
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "sub": subject,
            "role": role,
            "iss": self.cfg.issuer,
            "aud": self.cfg.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": jti,
            "typ": token_type,
            **extra,
        }
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers), jti

    def issue_access(self, subject: str, role: str, client_ids: tuple[str, ...] = ()) -> tuple[str, int]:
        """Returns (access token, expires_in seconds)."""
        ttl = self.cfg.access_token_ttl_seconds
        token, _ = self.issue(subject, role, ttl, client_ids=list(client_ids))
        return token, ttl


def new_api_key() -> tuple[str, str, str]:
    """Returns (key_id, secret, the full key shown once: aigw_<key_id>_<secret>)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}_{secret}"


def parse_api_key(value: str) -> tuple[str, str] | None:
    """Splits a presented API key into (key_id, secret); None when it is not one."""
    if not value.startswith(API_KEY_PREFIX) or len(value) > 256:
        return None
    key_id, sep, secret = value[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id, secret


def api_key_principal(key_id: str, subject: str, key_role: str, owner: tuple[str, bool, tuple[str, ...]]) -> Principal:
    """Who an active API key acts as, given its owner's (role, disabled, allowed client ids) now.

    The key's role is capped at the owner's current role; a disabled owner's keys do not work.
    """
    owner_role, disabled, client_ids = owner
    if disabled:
        raise Unauthenticated("API key is invalid or revoked")
    role = key_role if owner_role == "admin" else "user"
    return Principal(subject, role, "api_key", client_ids, key_id)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (API keys, refresh tokens); never used for passwords."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_credential(authorization: str) -> str:
    """The credential of an `Authorization: Bearer …` value, or UNAUTHENTICATED."""
    if not authorization:
        raise Unauthenticated("missing credentials: send Authorization: Bearer <token or API key>")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <credential>'")
    return value.strip()


ApiKeyLookup = Callable[[str, str], Awaitable[Principal]]
"""Finds the active API key with this id and secret hash and returns who it acts as; UNAUTHENTICATED otherwise."""


@dataclass(frozen=True)
class Account:
    """What a user is now, as far as authentication cares."""

    role: str
    disabled: bool


UserLookup = Callable[[str], Awaitable["Account | None"]]
"""The current account of a user name, or None when no such user exists."""

API_KEY_CACHE_SECONDS = 0.5
USER_CACHE_SECONDS = 0.5
TOKEN_CACHE_SECONDS = 60.0
CACHE_ENTRIES = 10_000


class Authenticator:
    """Turns a call's credentials into a Principal.

    `authorization: Bearer <JWT or API key>` is used when present, else `x-api-key: <API key>`. JWTs are
    verified locally; a correctly signed token whose role is not one of ROLES is PERMISSION_DENIED (the
    caller is known, the role grants nothing). A verified JWT is remembered until its `exp` (at most
    TOKEN_CACHE_SECONDS), which spares the signature check on every call of a client. API keys are looked
    up (the queue's IdentityService) and a found key is remembered for `cache_seconds`: that bounds how
    long a revoked key keeps working on one process. Unknown keys are not remembered, so a newly issued
    key works at once.

    With `users`, a token is also checked against its subject's current account (remembered for
    `user_cache_seconds`): a token naming no user, or a disabled one, is UNAUTHENTICATED, and a demoted
    user's admin token acts as a user. So disabling, deleting or demoting a user bites within that time
    on every process, for tokens already issued too.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        lookup: ApiKeyLookup | None,
        *,
        cache_seconds: float = API_KEY_CACHE_SECONDS,
        users: UserLookup | None = None,
        user_cache_seconds: float = USER_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verifier = verifier
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self.users = users
        self.user_cache_seconds = user_cache_seconds
        self._accounts: dict[str, tuple[float, Account | None]] = {}
        self._lookups: dict[str, asyncio.Future[Account | None]] = {}
        self.clock = clock
        self._keys: dict[str, tuple[float, Principal]] = {}
        self._tokens: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str, api_key: str = "") -> Principal:
        """The principal of a call, or UNAUTHENTICATED / PERMISSION_DENIED with the reason."""
        credential = bearer_credential(authorization) if authorization or not api_key else api_key.strip()
        parts = parse_api_key(credential)
        if parts is not None:
            return await self._api_key(*parts)
        if not authorization:
            raise Unauthenticated("malformed API key")
        principal = self._jwt(credential)
        if self.users is None:
            return principal
        return await self._as_now(principal)

    async def _as_now(self, principal: Principal) -> Principal:
        """A token's principal as its subject's account is now: refused when gone or disabled, capped when demoted."""
        now = self.clock()
        cached = self._accounts.get(principal.subject)
        if cached is not None and cached[0] > now:
            account = cached[1]
        else:
            account = await self._fetch_account(principal.subject, now)
        if account is None:
            raise Unauthenticated("token subject is not a user")
        if account.disabled:
            raise Unauthenticated("user is disabled")
        if principal.role == "admin" and account.role != "admin":
            return replace(principal, role="user")
        return principal

    def _jwt(self, token: str) -> Principal:
        now = self.clock()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = self.verifier.verify(token)
        role = claims.get("role")
        if isinstance(role, str) and role and role not in ROLES:
            raise PermissionDenied(f"role {role[:32]!r} may not use this API")
        principal = self.verifier.principal_of(claims)
        lifetime = min(TOKEN_CACHE_SECONDS, float(claims["exp"]) - time.time())
        self._tokens = _remember(self._tokens, token, (now + lifetime, principal), now)
        return principal

    async def _fetch_account(self, subject: str, now: float) -> Account | None:
        """Looks the account up once for all the calls that want it at the same moment (a burst of one client)."""
        pending = self._lookups.get(subject)
        if pending is not None:
            return await asyncio.shield(pending)
        assert self.users is not None
        task = asyncio.ensure_future(self.users(subject))
        self._lookups[subject] = task
        try:
            account = await asyncio.shield(task)
        finally:
            self._lookups.pop(subject, None)
        if self.user_cache_seconds > 0:
            if len(self._accounts) >= CACHE_ENTRIES:
                self._accounts = {}
            self._accounts[subject] = (now + self.user_cache_seconds, account)
        return account

    async def _api_key(self, key_id: str, secret: str) -> Principal:
        if self.lookup is None:
            raise Unauthenticated("API keys are not accepted here")
        digest = hash_secret(secret)
        entry = f"{key_id}:{digest}"
        now = self.clock()
        cached = self._keys.get(entry)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await self.lookup(key_id, digest)
        if self.cache_seconds > 0:
            self._keys = _remember(self._keys, entry, (now + self.cache_seconds, principal), now)
        return principal


def _remember(
    cache: dict[str, tuple[float, Principal]], key: str, value: tuple[float, Principal], now: float
) -> dict[str, tuple[float, Principal]]:
    """Adds an entry (until value[0]); lapsed entries are dropped once the cache is full, all of them if none lapsed."""
    if len(cache) >= CACHE_ENTRIES:
        cache = {k: v for k, v in cache.items() if v[0] > now}
        if len(cache) >= CACHE_ENTRIES:
            cache = {}
    cache[key] = value
    return cache
