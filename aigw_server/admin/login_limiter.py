"""Sliding-window limit on failed logins per account and source, and per source (brute-force protection).

Counting per account *and* source (OWASP) means nobody can lock a user out by failing logins from
elsewhere: the right password from the user's own address still works. Counting per source across
accounts stops one address from spraying guesses over many accounts.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigw_server.runtime.errors import ResourceExhausted

WINDOW_SECONDS = 60.0
SWEEP_ABOVE_KEYS = 10_000


@dataclass(frozen=True)
class Attempt:
    """A reserved login attempt: the keys it counts against and when it was made."""

    keys: tuple[str, ...]
    at: float


class LoginLimiter:
    """Allows at most `attempts_per_minute` failed logins per key in any 60-second window.

    An attempt is reserved before the password is checked (so parallel guesses cannot overshoot)
    and refunded when it succeeds; only failures stay counted. A limit of 0 or less turns it off.
    """

    def __init__(self, attempts_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = attempts_per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def acquire(self, keys: Sequence[str]) -> Attempt:
        """Reserves an attempt for every key, or raises RESOURCE_EXHAUSTED with the wait until one frees up."""
        now = self.clock()
        attempt = Attempt(tuple(keys), now)
        if self.limit <= 0:
            return attempt
        if len(self._seen) > SWEEP_ABOVE_KEYS:
            self._sweep(now)
        wait = max((self._wait(key, now) for key in keys), default=0.0)
        if wait > 0:
            raise ResourceExhausted(f"too many login attempts; try again in {math.ceil(wait)} s", retry_after=wait)
        for key in keys:
            self._seen.setdefault(key, deque()).append(now)
        return attempt

    def refund(self, attempt: Attempt) -> None:
        """Forgets a reserved attempt (the login succeeded)."""
        for key in attempt.keys:
            times = self._seen.get(key)
            if times is not None and attempt.at in times:
                times.remove(attempt.at)

    def _wait(self, key: str, now: float) -> float:
        times = self._seen.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + WINDOW_SECONDS - now

    def _sweep(self, now: float) -> None:
        for key in [k for k, times in self._seen.items() if not times or times[-1] <= now - WINDOW_SECONDS]:
            del self._seen[key]


def login_keys(username: str, client_ip: str) -> tuple[str, str]:
    """The limiter keys of a login attempt: the account at this source, and the source."""
    return (f"user:{username.lower()}@ip:{client_ip}", f"ip:{client_ip}")


def client_ip(forwarded_for: str, peer: str) -> str:
    """The caller's IP: the last `x-forwarded-for` entry (the one our edge appended), else the gRPC peer address.

    A gRPC peer reads "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" or "unix:/path"; anything unparsable is
    returned as it is, so it still works as a key.
    """
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
    if entries:
        return _normalise(entries[-1])
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return _normalise(rest.rsplit(":", 1)[0].strip("[]"))
    return peer


def _normalise(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        return value
