"""Brute-force protection: failed logins are limited per account and source, and per source, in a sliding minute."""

from __future__ import annotations

import pytest

from aigw_server.admin.login_limiter import LoginLimiter, client_ip, login_keys
from aigw_server.runtime.errors import ResourceExhausted


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(limiter: LoginLimiter, user: str, ip: str) -> None:
    limiter.acquire(login_keys(user, ip))


def test_failures_beyond_the_limit_are_refused_with_retry_after() -> None:
    clock = Clock()
    limiter = LoginLimiter(3, clock)
    for _ in range(3):
        fail(limiter, "alice", "10.0.0.1")
        clock.now += 5
    with pytest.raises(ResourceExhausted, match="too many login attempts") as refused:
        fail(limiter, "alice", "10.0.0.1")
    assert refused.value.retry_after == pytest.approx(60 - 15)


def test_the_window_slides() -> None:
    clock = Clock()
    limiter = LoginLimiter(2, clock)
    fail(limiter, "alice", "10.0.0.1")
    clock.now += 30
    fail(limiter, "alice", "10.0.0.1")
    clock.now += 29
    with pytest.raises(ResourceExhausted):
        fail(limiter, "alice", "10.0.0.1")
    clock.now += 1.5
    fail(limiter, "alice", "10.0.0.1")


def test_failures_elsewhere_never_lock_an_account_out_of_its_own_source() -> None:
    limiter = LoginLimiter(2, Clock())
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        fail(limiter, "alice", ip)
        fail(limiter, "Alice", ip)
        with pytest.raises(ResourceExhausted):
            fail(limiter, "alice", ip)
    limiter.refund(limiter.acquire(login_keys("alice", "192.0.2.7")))  # the owner, from their own address


def test_one_source_cannot_spray_guesses_over_many_accounts() -> None:
    limiter = LoginLimiter(2, Clock())
    fail(limiter, "bob", "10.0.0.9")
    fail(limiter, "carol", "10.0.0.9")
    with pytest.raises(ResourceExhausted):
        fail(limiter, "dave", "10.0.0.9")


def test_successful_logins_are_refunded() -> None:
    limiter = LoginLimiter(2, Clock())
    for _ in range(10):
        limiter.refund(limiter.acquire(("user:alice", "ip:10.0.0.1")))
    fail(limiter, "alice", "10.0.0.1")
    fail(limiter, "alice", "10.0.0.1")
    with pytest.raises(ResourceExhausted):
        fail(limiter, "alice", "10.0.0.1")


def test_a_refused_attempt_is_not_counted() -> None:
    clock = Clock()
    limiter = LoginLimiter(1, clock)
    fail(limiter, "alice", "10.0.0.1")
    for _ in range(5):
        with pytest.raises(ResourceExhausted):
            fail(limiter, "alice", "10.0.0.1")
    clock.now += 60.5
    fail(limiter, "alice", "10.0.0.1")


def test_zero_turns_the_limit_off() -> None:
    limiter = LoginLimiter(0, Clock())
    for _ in range(100):
        fail(limiter, "alice", "10.0.0.1")


@pytest.mark.parametrize(
    ("forwarded", "peer", "ip"),
    [
        ("", "ipv4:127.0.0.1:53412", "127.0.0.1"),
        ("", "ipv6:[::1]:53412", "::1"),
        ("", "ipv6:[0:0:0:0:0:0:0:1]:1", "::1"),
        ("203.0.113.7", "ipv4:127.0.0.1:1", "203.0.113.7"),
        ("1.1.1.1, 203.0.113.7", "ipv4:127.0.0.1:1", "203.0.113.7"),
        ("2001:db8::1", "ipv4:127.0.0.1:1", "2001:db8::1"),
        ("", "unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_client_ip_takes_the_edge_entry_else_the_peer(forwarded: str, peer: str, ip: str) -> None:
    assert client_ip(forwarded, peer) == ip
