"""Password hashing with argon2id (argon2-cffi), run in a worker thread so the event loop stays free."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from aigw_common.errors import InvalidArgument

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024


class PasswordHashing:
    """argon2id hashes in PHC string form; verification of an unknown user costs the same as of a known one."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        """Whether `password` matches; an empty `stored_hash` (no such user) is checked against a decoy and fails."""
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the hash was made with weaker parameters than the current ones."""
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored_hash or self._decoy, password) and bool(stored_hash)
        except (VerificationError, InvalidHashError):
            return False


def check_password(password: str, username: str) -> None:
    """The password policy: 12 to 1024 characters, not the user name."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidArgument(f"password: at least {MIN_PASSWORD_CHARS} characters", field="password")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidArgument(f"password: at most {MAX_PASSWORD_CHARS} characters", field="password")
    if password.lower() == username.lower():
        raise InvalidArgument("password: must differ from the user name", field="password")


def generate_password() -> str:
    """A strong random password (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)
