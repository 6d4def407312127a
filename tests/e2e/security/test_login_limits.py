"""Password guessing on POST /auth/token is limited per account and source, and per source: 401s, then 429 with
Retry-After; failures from elsewhere never lock the owner out of their own address."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from tests.e2e.security.conftest import LOGIN_LIMIT, SecureMesh
from tests.e2e.security.helpers import RESOURCE_EXHAUSTED, UNAUTHENTICATED, refusal

BAD_LOGIN = "invalid user name or password"


def create_user(secure: SecureMesh, username: str, password: str) -> None:
    with secure.client() as client:
        body = {"username": username, "password": password, "role": "user"}
        reply = client.post("/admin/users", json=body, headers=secure.admin)
    assert reply.status_code == 200, reply.text


def login(
    secure: SecureMesh,
    source_ip: str,
    username: str,
    password: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
) -> httpx.Response:
    """A form-encoded password login, as the token endpoint was first documented."""
    with secure.client(source_ip) as client:
        return client.post("/auth/token", data={"username": username, "password": password}, headers=headers)


def assert_limited(reply: httpx.Response) -> None:
    refusal(reply, 429, RESOURCE_EXHAUSTED, "too many login attempts")
    retry_after = int(reply.headers["retry-after"])
    assert 1 <= retry_after <= 60


def test_guessing_from_one_source_locks_that_source_only_and_the_owner_still_logs_in(secure: SecureMesh) -> None:
    password = "victim-password-1234"
    create_user(secure, "victim-one", password)
    attacker = "127.0.0.30"
    for i in range(LOGIN_LIMIT):
        refusal(login(secure, attacker, "victim-one", f"guess-{i}"), 401, UNAUTHENTICATED, BAD_LOGIN)
    assert_limited(login(secure, attacker, "victim-one", "guess-again"))
    assert_limited(login(secure, attacker, "victim-one", password))
    # A forged X-Forwarded-For (also with non-ASCII bytes) does not move the attacker to another source.
    assert_limited(login(secure, attacker, "victim-one", "guess", headers={"x-forwarded-for": "203.0.113.7"}))
    raw_xff = {b"x-forwarded-for": b"203.0.113.8, caf\xe9"}
    assert_limited(login(secure, attacker, "victim-one", "guess", headers=raw_xff))
    owner = login(secure, "127.0.0.31", "victim-one", password)
    assert owner.status_code == 200, owner.text


def test_guessing_from_one_ip_is_limited_across_user_names(secure: SecureMesh) -> None:
    password = "bystander-password-1234"
    create_user(secure, "bystander", password)
    ip = "127.0.0.50"
    for i in range(LOGIN_LIMIT):
        refusal(login(secure, ip, f"no-such-user-{i}", "guess"), 401, UNAUTHENTICATED, BAD_LOGIN)
    assert_limited(login(secure, ip, "no-such-user-x", "guess"))
    assert_limited(login(secure, ip, "bystander", password))
    assert_limited(login(secure, ip, "bystander", password, headers={"x-forwarded-for": "203.0.113.7"}))
    reply = login(secure, "127.0.0.51", "bystander", password)
    assert reply.status_code == 200, reply.text
    assert reply.json()["role"] == "user"


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(secure: SecureMesh) -> None:
    create_user(secure, "known-user", "known-user-password-1")
    unknown = login(secure, "127.0.0.60", "unknown-user", "whatever-password")
    wrong = login(secure, "127.0.0.61", "known-user", "whatever-password")
    assert refusal(unknown, 401, UNAUTHENTICATED) == refusal(wrong, 401, UNAUTHENTICATED)
