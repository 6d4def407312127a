"""The password policy and generated passwords; hashing itself is `aigw_server.runtime.passwords`."""

from __future__ import annotations

import secrets

from aigw_server.runtime.errors import InvalidArgument
from aigw_server.runtime.passwords import PasswordHashing

__all__ = ["MAX_PASSWORD_CHARS", "MIN_PASSWORD_CHARS", "PasswordHashing", "check_password", "generate_password"]

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024


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
