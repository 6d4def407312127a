"""Sessions: password login, refresh-token rotation with reuse detection, and logout."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from aigw.queue.v1 import queue_pb2
from aigw_server.admin.identity import USERNAME
from aigw_server.admin.identity_store import IdentityStore
from aigw_server.admin.login_limiter import LoginLimiter, login_keys
from aigw_server.admin.passwords import PasswordHashing
from aigw_server.runtime.auth import TokenSigner, TokenVerifier, hash_secret
from aigw_server.runtime.errors import NotFound, Unauthenticated

log = logging.getLogger(__name__)

BAD_LOGIN = "invalid user name or password"
BAD_REFRESH = "refresh token is invalid, expired, revoked or already used; log in again"


@dataclass(frozen=True)
class TokenPair:
    """What a successful login or refresh returns."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    role: str


class Sessions:
    """Issues access tokens (short-lived JWTs) and single-use refresh tokens (JWTs with typ "refresh").

    Every refresh token belongs to a family (claim "fam") started by a password login. Refreshing
    consumes the token and issues a new pair in the same family; presenting a consumed token again
    revokes the whole family, so a stolen token is useful once at most.
    """

    def __init__(
        self,
        store: IdentityStore,
        passwords: PasswordHashing,
        signer: TokenSigner,
        verifier: TokenVerifier,
        limiter: LoginLimiter,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.signer = signer
        self.verifier = verifier
        self.limiter = limiter

    async def login(self, username: str, password: str, client_ip: str) -> TokenPair:
        """Checks the password (limited per user and per IP) and starts a new token family."""
        attempt = self.limiter.acquire(login_keys(username, client_ip))
        try:
            # The queue checks the password where the hash is kept (and rehashes it when due).
            user = await self.store.verify_password(username, password)
        except Unauthenticated:
            log.info("login refused", extra={"username": username[:64], "client_ip": client_ip})
            raise Unauthenticated(BAD_LOGIN) from None
        self.limiter.refund(attempt)
        return await self._issue(user, uuid.uuid4().hex)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotates a refresh token: consumes it and issues a new pair in its family."""
        claims = self._refresh_claims(refresh_token)
        family = str(claims.get("fam", ""))
        try:
            await self.store.consume_refresh_token(str(claims.get("jti", "")), hash_secret(refresh_token))
        except Unauthenticated:
            revoked = await self.store.revoke_refresh_tokens(family_id=family) if family else 0
            log.warning("refresh token refused; family revoked", extra={"subject": claims["sub"], "revoked": revoked})
            raise Unauthenticated(BAD_REFRESH) from None
        user = await self._find(str(claims["sub"]))
        if user is None or user.disabled:
            raise Unauthenticated(BAD_REFRESH)
        return await self._issue(user, family)

    async def revoke(self, refresh_token: str) -> int:
        """Revokes the token's family (logout); an invalid or expired token revokes nothing (RFC 7009)."""
        try:
            claims = self._refresh_claims(refresh_token)
        except Unauthenticated:
            return 0
        family = str(claims.get("fam", ""))
        return await self.store.revoke_refresh_tokens(family_id=family) if family else 0

    def _refresh_claims(self, refresh_token: str) -> dict[str, object]:
        try:
            claims = self.verifier.verify(refresh_token, token_type="refresh")
        except Unauthenticated:
            raise Unauthenticated(BAD_REFRESH) from None
        return claims

    async def _find(self, username: str) -> queue_pb2.User | None:
        if not USERNAME.fullmatch(username):
            return None
        try:
            return await self.store.get_user(username)
        except NotFound:
            return None

    async def _issue(self, user: queue_pb2.User, family: str) -> TokenPair:
        access, expires_in = self.signer.issue_access(user.username, user.role, tuple(user.allowed_client_ids))
        ttl = self.signer.cfg.refresh_token_ttl_seconds
        refresh, jti = self.signer.issue(user.username, user.role, ttl, token_type="refresh", fam=family)
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(seconds=ttl))
        record = queue_pb2.RefreshToken(
            token_id=jti, token_hash=hash_secret(refresh), subject=user.username, family_id=family, expires_at=expires
        )
        await self.store.store_refresh_token(record)
        return TokenPair(access, expires_in, refresh, ttl, user.role)
