"""Who an admin call acts as: a JWT access token or an API key from the Authorization header."""

from __future__ import annotations

from aigw_common.auth import Principal, TokenVerifier, bearer_credential, hash_secret, parse_api_key
from aigw_common.errors import NotFound, Unauthenticated
from services.admin.identity_store import IdentityStore

BAD_KEY = "API key is invalid or revoked"


class Access:
    """Resolves the caller of an admin RPC and requires the admin role."""

    def __init__(self, verifier: TokenVerifier, store: IdentityStore) -> None:
        self.verifier = verifier
        self.store = store

    async def principal(self, authorization: str) -> Principal:
        """The verified caller: UNAUTHENTICATED when the credential is missing or bad.

        An API key acts with its own role, capped at its owner's current role, and stops working
        when its owner is disabled or deleted.
        """
        credential = bearer_credential(authorization)
        parsed = parse_api_key(credential)
        if parsed is None:
            return self.verifier.principal(credential)
        key_id, secret = parsed
        try:
            key = await self.store.lookup_api_key(key_id, hash_secret(secret))
            owner = await self.store.get_user(key.subject)
        except NotFound:
            raise Unauthenticated(BAD_KEY) from None
        if owner.disabled:
            raise Unauthenticated(BAD_KEY)
        role = key.role if owner.role == "admin" else "user"
        return Principal(key.subject, role, "api_key", tuple(owner.allowed_client_ids), key.key_id)

    async def admin(self, authorization: str) -> Principal:
        """The verified caller if it has the admin role; PERMISSION_DENIED otherwise."""
        principal = await self.principal(authorization)
        principal.require_admin()
        return principal
