"""Users, API keys and refresh tokens, stored for the admin service and the routers.

Users and API keys are few and read on every API-key request, so they are cached in memory and
written through. Refresh tokens are used once: the use is an insert keyed by the token id, so
the database itself lets exactly one use succeed; a second use revokes the token's family.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aigw_server.queue.store import API_KEYS, REFRESH_TOKEN_USES, REFRESH_TOKENS, USERS, Duplicate, QueueStore
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from aigw_server.runtime.passwords import PasswordHashing

Doc = dict[str, Any]
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ROLES = ("user", "admin")
MAX_CLIENT_IDS = 100
USE_RECORD_SECONDS = 60.0
BAD_PASSWORD = "invalid user name or password"


@dataclass(frozen=True)
class User:
    """A user of the gateway."""

    username: str
    role: str
    password_hash: str = ""
    disabled: bool = False
    allowed_client_ids: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class UserChange:
    """A change to a user; None leaves a field as it is."""

    username: str
    role: str | None = None
    password_hash: str | None = None
    disabled: bool | None = None
    allowed_client_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (the secret's hash only)."""

    key_id: str
    secret_hash: str
    subject: str
    role: str
    name: str = ""
    created_at: float = 0.0
    last_used_at: float = 0.0
    revoked_at: float = 0.0


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token's record (its hash only)."""

    token_id: str
    token_hash: str
    subject: str
    family_id: str
    expires_at: float
    used_at: float = 0.0
    revoked_at: float = 0.0


def _check_role(role: str, field: str) -> None:
    if role not in ROLES:
        raise InvalidArgument(f"{field}: must be one of {', '.join(ROLES)}", field=field)


def _check_hash(value: str, field: str) -> None:
    if not SHA256_HEX.fullmatch(value):
        raise InvalidArgument(f"{field}: must be a SHA-256 digest in lowercase hex", field=field)


def _check_clients(ids: tuple[str, ...]) -> None:
    if len(ids) > MAX_CLIENT_IDS or any(not c or len(c) > 128 for c in ids):
        raise InvalidArgument(
            f"allowed_client_ids: at most {MAX_CLIENT_IDS} ids of 1 to 128 characters", field="allowed_client_ids"
        )


def check_user(user: User) -> None:
    if not USERNAME.fullmatch(user.username):
        raise InvalidArgument("user.username: 1 to 64 letters, digits, '.', '_', '@' or '-'", field="user.username")
    _check_role(user.role, "user.role")
    if len(user.password_hash) > 1024:
        raise InvalidArgument("user.password_hash: too long", field="user.password_hash")
    _check_clients(user.allowed_client_ids)


def user_document(u: User) -> Doc:
    return {
        "_id": u.username,
        "role": u.role,
        "password_hash": u.password_hash,
        "disabled": u.disabled,
        "allowed_client_ids": list(u.allowed_client_ids),
        "created_at": to_datetime(u.created_at),
        "updated_at": to_datetime(u.updated_at),
    }


def user_from_document(d: Doc) -> User:
    return User(
        d["_id"],
        d.get("role", "user"),
        d.get("password_hash", ""),
        bool(d.get("disabled", False)),
        tuple(d.get("allowed_client_ids") or ()),
        from_datetime(d.get("created_at")),
        from_datetime(d.get("updated_at")),
    )


def key_document(k: ApiKey) -> Doc:
    return {
        "_id": k.key_id,
        "secret_hash": k.secret_hash,
        "subject": k.subject,
        "role": k.role,
        "name": k.name,
        "created_at": to_datetime(k.created_at),
        "last_used_at": to_datetime(k.last_used_at) if k.last_used_at else None,
        "revoked_at": to_datetime(k.revoked_at) if k.revoked_at else None,
    }


def key_from_document(d: Doc) -> ApiKey:
    return ApiKey(
        d["_id"],
        d.get("secret_hash", ""),
        d.get("subject", ""),
        d.get("role", "user"),
        d.get("name", ""),
        from_datetime(d.get("created_at")),
        from_datetime(d.get("last_used_at")),
        from_datetime(d.get("revoked_at")),
    )


def token_document(t: RefreshToken) -> Doc:
    return {
        "_id": t.token_id,
        "token_hash": t.token_hash,
        "subject": t.subject,
        "family_id": t.family_id,
        "expires_at": to_datetime(t.expires_at),
        "used_at": to_datetime(t.used_at) if t.used_at else None,
        "revoked_at": to_datetime(t.revoked_at) if t.revoked_at else None,
    }


def token_from_document(d: Doc) -> RefreshToken:
    return RefreshToken(
        d["_id"],
        d.get("token_hash", ""),
        d.get("subject", ""),
        d.get("family_id", ""),
        from_datetime(d.get("expires_at")),
        from_datetime(d.get("used_at")),
        from_datetime(d.get("revoked_at")),
    )


class Identities:
    """The identity records, with users and API keys cached (the queue is their only writer)."""

    def __init__(self, store: QueueStore, clock: Callable[[], float], passwords: PasswordHashing | None = None) -> None:
        self.store = store
        self.clock = clock
        self.passwords = passwords or PasswordHashing()
        self.users: dict[str, User] = {}
        self.keys: dict[str, ApiKey] = {}
        self._dirty_keys: set[str] = set()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        self.users = {d["_id"]: user_from_document(d) for d in await self.store.find(USERS, {})}
        self.keys = {d["_id"]: key_from_document(d) for d in await self.store.find(API_KEYS, {})}

    def get_user(self, username: str) -> User:
        user = self.users.get(username)
        if user is None:
            raise NotFound(f"user {username!r} does not exist")
        return user

    async def verify_password(self, username: str, password: str) -> User:
        """The user whose password this is; Unauthenticated alike for an unknown or disabled user or a wrong password.

        An unknown user costs the same argon2 verification (against a decoy) as a known one. A hash made
        with weaker parameters than the current ones is replaced on success.
        """
        user = self.users.get(username)
        stored = user.password_hash if user is not None and not user.disabled else ""
        if user is None or not await self.passwords.verify(stored, password):
            raise Unauthenticated(BAD_PASSWORD)
        if self.passwords.needs_rehash(user.password_hash):
            user = await self.update_user(UserChange(username, password_hash=await self.passwords.hash(password)))
        return user

    def list_users(self) -> list[User]:
        return sorted(self.users.values(), key=lambda u: u.username)

    async def create_user(self, user: User) -> User:
        check_user(user)
        now = self.clock()
        stored = replace(user, created_at=now, updated_at=now)
        async with self._lock:
            if user.username in self.users:
                raise AlreadyExists(f"user {user.username!r} already exists")
            try:
                await self.store.insert(USERS, user_document(stored))
            except Duplicate:
                raise AlreadyExists(f"user {user.username!r} already exists") from None
            self.users[user.username] = stored
        return stored

    async def update_user(self, change: UserChange) -> User:
        async with self._lock:
            current = self.get_user(change.username)
            updated = replace(
                current,
                role=current.role if change.role is None else change.role,
                password_hash=current.password_hash if change.password_hash is None else change.password_hash,
                disabled=current.disabled if change.disabled is None else change.disabled,
                allowed_client_ids=current.allowed_client_ids if change.allowed_client_ids is None else change.allowed_client_ids,
                updated_at=self.clock(),
            )
            check_user(updated)
            await self.store.replace(USERS, user_document(updated))
            self.users[updated.username] = updated
        return updated

    async def delete_user(self, username: str) -> None:
        """Deletes the user, revokes their API keys and refresh tokens."""
        async with self._lock:
            self.get_user(username)
            now = self.clock()
            for key in [k for k in self.keys.values() if k.subject == username and not k.revoked_at]:
                await self._store_key(replace(key, revoked_at=now))
            await self.revoke_refresh_tokens("", username)
            await self.store.delete_ids(USERS, [username])
            del self.users[username]

    async def create_api_key(self, key: ApiKey) -> ApiKey:
        if not KEY_ID.fullmatch(key.key_id):
            raise InvalidArgument("key.key_id: 1 to 128 letters, digits, '.', '_' or '-'", field="key.key_id")
        _check_hash(key.secret_hash, "key.secret_hash")
        _check_role(key.role, "key.role")
        async with self._lock:
            owner = self.get_user(key.subject)
            if key.role == "admin" and owner.role != "admin":
                raise InvalidArgument("key.role: a key cannot have more rights than its user", field="key.role")
            if key.key_id in self.keys:
                raise AlreadyExists(f"API key {key.key_id!r} already exists")
            stored = replace(key, name=key.name[:200], created_at=self.clock(), last_used_at=0.0, revoked_at=0.0)
            try:
                await self.store.insert(API_KEYS, key_document(stored))
            except Duplicate:
                raise AlreadyExists(f"API key {key.key_id!r} already exists") from None
            self.keys[key.key_id] = stored
        return stored

    def lookup_api_key(self, key_id: str, secret_hash: str) -> ApiKey:
        """The active key with this id and secret; its use is recorded (persisted within a minute)."""
        key = self.keys.get(key_id)
        if key is None or key.revoked_at or not hmac.compare_digest(key.secret_hash, secret_hash):
            raise NotFound("API key is unknown, revoked, or the secret does not match")
        now = self.clock()
        if now - key.last_used_at >= USE_RECORD_SECONDS:
            key = replace(key, last_used_at=now)
            self.keys[key_id] = key
            self._dirty_keys.add(key_id)
        return key

    def list_api_keys(self, subject: str) -> list[ApiKey]:
        keys = [k for k in self.keys.values() if not subject or k.subject == subject]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        async with self._lock:
            key = self.keys.get(key_id)
            if key is None:
                raise NotFound(f"API key {key_id!r} does not exist")
            if not key.revoked_at:
                key = replace(key, revoked_at=self.clock())
                await self._store_key(key)
        return key

    async def flush_key_use(self) -> None:
        """Persists the last-use times recorded since the previous flush."""
        dirty, self._dirty_keys = self._dirty_keys, set()
        for key_id in dirty:
            key = self.keys.get(key_id)
            if key is not None:
                await self.store.update_one(API_KEYS, {"_id": key_id}, {"$set": {"last_used_at": to_datetime(key.last_used_at)}})

    async def _store_key(self, key: ApiKey) -> None:
        await self.store.replace(API_KEYS, key_document(key))
        self.keys[key.key_id] = key

    async def store_refresh_token(self, token: RefreshToken) -> None:
        if not token.token_id or len(token.token_id) > 128:
            raise InvalidArgument("token.token_id: 1 to 128 characters", field="token.token_id")
        _check_hash(token.token_hash, "token.token_hash")
        if not token.subject or not token.family_id:
            raise InvalidArgument("token.subject and token.family_id: required", field="token.family_id")
        if token.expires_at <= self.clock():
            raise InvalidArgument("token.expires_at: must be in the future", field="token.expires_at")
        try:
            await self.store.insert(REFRESH_TOKENS, token_document(replace(token, used_at=0.0, revoked_at=0.0)))
        except Duplicate:
            raise AlreadyExists(f"refresh token {token.token_id!r} already exists") from None

    async def consume_refresh_token(self, token_id: str, token_hash: str) -> RefreshToken:
        """Marks the token used, exactly once; a reused token revokes its family."""
        doc = await self.store.find_one(REFRESH_TOKENS, {"_id": token_id}) if token_id else None
        if doc is None:
            raise Unauthenticated("refresh token is unknown")
        token = token_from_document(doc)
        now = self.clock()
        if not hmac.compare_digest(token.token_hash, token_hash):
            raise Unauthenticated("refresh token does not match")
        if token.revoked_at:
            raise Unauthenticated("refresh token was revoked")
        if token.expires_at <= now:
            raise Unauthenticated("refresh token expired")
        if token.used_at:
            await self.revoke_refresh_tokens(token.family_id, "")
            raise Unauthenticated("refresh token was already used; its family is revoked")
        try:
            await self.store.insert(
                REFRESH_TOKEN_USES, {"_id": token_id, "at": to_datetime(now), "expires_at": doc["expires_at"]}
            )
        except Duplicate:
            await self.revoke_refresh_tokens(token.family_id, "")
            raise Unauthenticated("refresh token was already used; its family is revoked") from None
        used = replace(token, used_at=now)
        await self.store.update_one(REFRESH_TOKENS, {"_id": token_id}, {"$set": {"used_at": to_datetime(now)}})
        return used

    async def revoke_refresh_tokens(self, family_id: str, subject: str) -> int:
        """Revokes every unrevoked token of a family or of a subject; returns how many."""
        if not family_id and not subject:
            raise InvalidArgument("family_id or subject: one is required", field="family_id")
        query: Doc = {"family_id": family_id} if family_id else {"subject": subject}
        query["revoked_at"] = None
        return await self.store.update_many(REFRESH_TOKENS, query, {"$set": {"revoked_at": to_datetime(self.clock())}})
