"""Passwords: argon2id hashes verified off the event loop, unknown users cost a decoy check, and the policy."""

from __future__ import annotations

import asyncio
import time

import pytest

from aigw_server.admin.passwords import PasswordHashing, check_password, generate_password
from aigw_server.runtime.errors import InvalidArgument

HASHING = PasswordHashing()


async def test_hash_is_argon2id_and_verifies() -> None:
    stored = await HASHING.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert await HASHING.verify(stored, "correct horse battery")
    assert not await HASHING.verify(stored, "correct horse batterz")
    assert not HASHING.needs_rehash(stored)


async def test_unknown_user_and_broken_hash_fail_at_a_comparable_cost() -> None:
    stored = await HASHING.hash("correct horse battery")
    start = time.perf_counter()
    assert not await HASHING.verify(stored, "wrong password here")
    known = time.perf_counter() - start
    start = time.perf_counter()
    assert not await HASHING.verify("", "wrong password here")
    unknown = time.perf_counter() - start
    assert unknown > known / 4
    assert not await HASHING.verify("not-a-hash", "x")
    assert HASHING.needs_rehash("not-a-hash")


async def test_hashing_leaves_the_event_loop_free() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(HASHING.hash(f"password number {i}") for i in range(3)))
    ticker.cancel()
    assert ticks >= 5


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 12"), ("x" * 1025, "at most 1024"), ("Alice.Example", "differ from the user name")],
)
def test_policy(password: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_password(password, "alice.example")


def test_generated_passwords_are_long_and_distinct() -> None:
    first, second = generate_password(), generate_password()
    assert len(first) >= 32
    assert first != second
    check_password(first, "admin")
