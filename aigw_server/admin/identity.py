"""Identity rules: users with roles, and API keys for services (shown once, stored hashed, revocable)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aigw.queue.v1 import queue_pb2
from aigw_server.admin.identity_store import IdentityStore
from aigw_server.admin.passwords import PasswordHashing, check_password
from aigw_server.runtime.auth import ROLES, Principal, hash_secret, new_api_key
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
MAX_CLIENT_IDS = 100
MAX_KEY_NAME_CHARS = 200


def check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise InvalidArgument("username: 3 to 64 of letters, digits, '.', '_', '-'", field="username")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidArgument(f"role: must be one of {', '.join(ROLES)}", field="role")


def check_client_ids(client_ids: Sequence[str]) -> None:
    if len(client_ids) > MAX_CLIENT_IDS:
        raise InvalidArgument(f"allowed_client_ids: at most {MAX_CLIENT_IDS}", field="allowed_client_ids")
    for value in client_ids:
        if not CLIENT_ID.fullmatch(value):
            raise InvalidArgument(
                f"allowed_client_ids: {value[:40]!r} is not 1 to 128 of letters, digits, '.', '_', ':', '@', '/', '-'",
                field="allowed_client_ids",
            )


@dataclass(frozen=True)
class UserChange:
    """A change to a user; None leaves a field as it is."""

    username: str
    role: str | None = None
    password: str | None = None
    disabled: bool | None = None
    allowed_client_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class IssuedKey:
    """A new API key: its stored record and the full secret, shown this once."""

    record: queue_pb2.ApiKey
    api_key: str


class Accounts:
    """Users and API keys, validated here and stored through the identity store."""

    def __init__(self, store: IdentityStore, passwords: PasswordHashing) -> None:
        self.store = store
        self.passwords = passwords

    async def list_users(self) -> list[queue_pb2.User]:
        return sorted(await self.store.list_users(), key=lambda u: u.username)

    async def create_user(self, username: str, password: str, role: str, client_ids: Sequence[str]) -> queue_pb2.User:
        check_username(username)
        check_role(role or "user")
        check_password(password, username)
        check_client_ids(client_ids)
        user = queue_pb2.User(
            username=username,
            role=role or "user",
            password_hash=await self.passwords.hash(password),
            allowed_client_ids=list(client_ids),
        )
        return await self.store.create_user(user)

    async def update_user(self, actor: Principal, change: UserChange) -> queue_pb2.User:
        """Applies a change; a password change or disabling also revokes the user's refresh tokens."""
        check_username(change.username)
        self._protect_self(actor, change)
        request = queue_pb2.UpdateUserRequest(username=change.username)
        if change.role is not None:
            check_role(change.role)
            request.role = change.role
        if change.password is not None:
            check_password(change.password, change.username)
            request.password_hash = await self.passwords.hash(change.password)
        if change.disabled is not None:
            request.disabled = change.disabled
        if change.allowed_client_ids is not None:
            check_client_ids(change.allowed_client_ids)
            request.allowed_client_ids.extend(change.allowed_client_ids)
            request.set_allowed_client_ids = True
        user = await self.store.update_user(request)
        if change.password is not None or change.disabled:
            await self.store.revoke_refresh_tokens(subject=change.username)
        return user

    async def delete_user(self, actor: Principal, username: str) -> None:
        check_username(username)
        if username == actor.subject:
            raise FailedPrecondition("you cannot delete your own user; another admin can")
        await self.store.delete_user(username)

    async def create_api_key(self, actor: Principal, subject: str, role: str, name: str) -> IssuedKey:
        """A key acting as `subject` (default: the caller) with `role` (default "user", at most the subject's role)."""
        subject = subject or actor.subject
        role = role or "user"
        check_role(role)
        if len(name) > MAX_KEY_NAME_CHARS:
            raise InvalidArgument(f"name: at most {MAX_KEY_NAME_CHARS} characters", field="name")
        owner = await self._user(subject)
        if owner.disabled:
            raise FailedPrecondition(f"user {subject!r} is disabled")
        if role == "admin" and owner.role != "admin":
            raise PermissionDenied(f"user {subject!r} is not an admin, so its keys cannot have the admin role")
        key_id, secret, full = new_api_key()
        record = queue_pb2.ApiKey(key_id=key_id, secret_hash=hash_secret(secret), subject=subject, role=role, name=name)
        stored = await self.store.create_api_key(record)
        stored.ClearField("secret_hash")
        return IssuedKey(stored, full)

    async def list_api_keys(self, subject: str) -> list[queue_pb2.ApiKey]:
        keys = await self.store.list_api_keys(subject)
        for key in keys:
            key.ClearField("secret_hash")
        return keys

    async def revoke_api_key(self, key_id: str) -> queue_pb2.ApiKey:
        if not key_id:
            raise InvalidArgument("key_id: required", field="key_id")
        key = await self.store.revoke_api_key(key_id)
        key.ClearField("secret_hash")
        return key

    async def _user(self, username: str) -> queue_pb2.User:
        check_username(username)
        try:
            return await self.store.get_user(username)
        except NotFound:
            raise NotFound(f"no user named {username!r}") from None

    @staticmethod
    def _protect_self(actor: Principal, change: UserChange) -> None:
        """An admin cannot lock themselves out, so at least one admin always remains."""
        if change.username != actor.subject:
            return
        if change.disabled or (change.role is not None and change.role != "admin"):
            raise FailedPrecondition("you cannot disable or demote your own user; another admin can")
