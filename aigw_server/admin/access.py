"""Who an admin call acts as: a JWT access token or an API key, through the shared Authenticator."""

from __future__ import annotations

from aigw_server.admin.identity_store import IdentityStore
from aigw_server.runtime.auth import Account, Authenticator, Principal, TokenVerifier, api_key_principal
from aigw_server.runtime.errors import NotFound, Unauthenticated

BAD_KEY = "API key is invalid or revoked"


class Access:
    """Resolves the caller of an admin RPC and requires the admin role.

    API keys and token subjects are looked up on every call (no cache: a revoked key, a disabled,
    deleted or demoted user stops at once here). A key acts with
    its own role capped at its owner's current role, and stops working when its owner is disabled or
    deleted.
    """

    def __init__(self, verifier: TokenVerifier, store: IdentityStore) -> None:
        self.store = store
        self.authenticator = Authenticator(
            verifier, self._api_key, cache_seconds=0.0, users=self._account, user_cache_seconds=0.0
        )

    async def principal(self, authorization: str, api_key: str = "") -> Principal:
        """The verified caller: UNAUTHENTICATED when the credential is missing or bad."""
        return await self.authenticator.authenticate(authorization, api_key)

    async def admin(self, authorization: str, api_key: str = "") -> Principal:
        """The verified caller if it has the admin role; PERMISSION_DENIED otherwise."""
        principal = await self.principal(authorization, api_key)
        principal.require_admin()
        return principal

    async def _account(self, username: str) -> Account | None:
        try:
            user = await self.store.get_user(username)
        except NotFound:
            return None
        return Account(user.role, user.disabled)

    async def _api_key(self, key_id: str, secret_hash: str) -> Principal:
        try:
            key = await self.store.lookup_api_key(key_id, secret_hash)
            owner = await self.store.get_user(key.subject)
        except NotFound:
            raise Unauthenticated(BAD_KEY) from None
        return api_key_principal(key.key_id, key.subject, key.role, (owner.role, owner.disabled, tuple(owner.allowed_client_ids)))
