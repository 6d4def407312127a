"""The bootstrap admin: from AIGW_ADMIN_PASSWORD, or generated once and handed to the operator."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aigw.queue.v1 import queue_pb2
from aigw_server.admin.identity_store import IdentityStore
from aigw_server.admin.passwords import PasswordHashing, generate_password
from aigw_server.runtime.errors import AlreadyExists, NotFound, Unauthenticated

log = logging.getLogger(__name__)


def write_secret(path: Path, value: str) -> None:
    """Writes `value` to `path` readable by the owner only (0600), replacing an older file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    path.chmod(0o600)


class AdminBootstrap:
    """Makes sure an operator can log in to a fresh store, without any fixed default password.

    - `AIGW_ADMIN_PASSWORD` set: the admin user is created with it, or its password is reset to it
      when the stored one differs (the variable stays the source of truth while it is set).
    - Not set, and the store has no admin at all: a random password is generated, the admin user
      created, and the password written to `<data_dir>/secrets/admin_password` (mode 0600); a
      WARNING log line says where it is (never the password: logs are read by more people).
    """

    def __init__(self, store: IdentityStore, passwords: PasswordHashing, username: str, password: str, data_dir: Path) -> None:
        self.store = store
        self.passwords = passwords
        self.username = username
        self.password = password
        self.secret_file = data_dir / "secrets" / "admin_password"

    async def run(self) -> str:
        """Returns what it did: "exists", "created", "password reset" or "generated"."""
        user = await self._existing()
        if user is not None:
            return await self._sync_password(user)
        if self.password:
            return await self._create(self.password, "created")
        if any(u.role == "admin" for u in await self.store.list_users()):
            return "exists"
        password = generate_password()
        outcome = await self._create(password, "generated")
        if outcome == "generated":
            write_secret(self.secret_file, password)
            log.warning(
                "generated the bootstrap admin's password: log in as %r with the password in %s (readable by its owner only)",
                self.username,
                self.secret_file,
            )
        return outcome

    async def _existing(self) -> queue_pb2.User | None:
        try:
            return await self.store.get_user(self.username)
        except NotFound:
            return None

    async def _sync_password(self, user: queue_pb2.User) -> str:
        if not self.password:
            return "exists"
        try:
            await self.store.verify_password(self.username, self.password)
            return "exists"
        except Unauthenticated:
            pass
        change = queue_pb2.UpdateUserRequest(username=self.username, password_hash=await self.passwords.hash(self.password))
        await self.store.update_user(change)
        log.info("bootstrap admin's password reset from AIGW_ADMIN_PASSWORD", extra={"username": self.username})
        return "password reset"

    async def _create(self, password: str, outcome: str) -> str:
        user = queue_pb2.User(username=self.username, role="admin", password_hash=await self.passwords.hash(password))
        try:
            await self.store.create_user(user)
        except AlreadyExists:
            return "exists"
        log.info("bootstrap admin created", extra={"username": self.username})
        return outcome
