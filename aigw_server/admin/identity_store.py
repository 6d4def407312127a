"""What the identity rules need from storage (the queue's IdentityService), as a protocol."""

from __future__ import annotations

from typing import Protocol

from aigw.queue.v1 import queue_pb2


class IdentityStore(Protocol):
    """Users, API keys and refresh tokens; errors arrive as domain errors (NotFound, AlreadyExists, Unauthenticated…)."""

    async def get_user(self, username: str) -> queue_pb2.User:
        """The user, or NotFound."""

    async def create_user(self, user: queue_pb2.User) -> queue_pb2.User:
        """Stores a new user, or AlreadyExists."""

    async def verify_password(self, username: str, password: str) -> queue_pb2.User:
        """The user whose password this is (checked where the hash is kept), or Unauthenticated."""

    async def list_users(self) -> list[queue_pb2.User]:
        """Every user."""

    async def update_user(self, change: queue_pb2.UpdateUserRequest) -> queue_pb2.User:
        """Applies a change, or NotFound."""

    async def delete_user(self, username: str) -> None:
        """Deletes a user (and revokes their keys and refresh tokens), or NotFound."""

    async def create_api_key(self, key: queue_pb2.ApiKey) -> queue_pb2.ApiKey:
        """Stores a key's record (hash only)."""

    async def lookup_api_key(self, key_id: str, secret_hash: str) -> queue_pb2.ApiKey:
        """The active key with that id and hash (recording its use), or NotFound."""

    async def list_api_keys(self, subject: str) -> list[queue_pb2.ApiKey]:
        """Keys, of one subject when given."""

    async def revoke_api_key(self, key_id: str) -> queue_pb2.ApiKey:
        """Revokes a key, or NotFound."""

    async def store_refresh_token(self, token: queue_pb2.RefreshToken) -> None:
        """Stores a refresh token's record (hash only)."""

    async def consume_refresh_token(self, token_id: str, token_hash: str) -> queue_pb2.RefreshToken:
        """Marks a token used, once; Unauthenticated when unknown, expired, revoked or reused."""

    async def revoke_refresh_tokens(self, family_id: str = "", subject: str = "") -> int:
        """Revokes a family's or a subject's refresh tokens; returns how many."""
