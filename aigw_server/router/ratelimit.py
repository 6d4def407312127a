"""Per-client token buckets with per-client and per-role overrides (no I/O; the clock is injectable)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from aigw_server.runtime.config import RateLimit, RateLimitConfig
from aigw_server.runtime.errors import ResourceExhausted

RATE_LIMITED = Counter("aigw_router_rate_limited_total", "Requests refused by the per-client rate limit", ["role"])

PRUNE_AT = 10_000


@dataclass
class TokenBucket:
    """`burst` tokens at most, refilled at `rate` tokens per second; each request takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Takes a token and returns 0, or returns the seconds until one is available (taking nothing)."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class RateLimiter:
    """One bucket per client id. The limit is the client's override, else its role's, else the default.

    A `requests_per_minute` of 0 or less means unlimited. Full, idle buckets are forgotten (a full bucket
    is the same as a new one), so memory stays bounded by the clients active within one refill period.
    """

    def __init__(self, cfg: RateLimitConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def limit_for(self, client_id: str, role: str) -> RateLimit:
        return self.cfg.clients.get(client_id) or self.cfg.roles.get(role) or self.cfg.default

    def check(self, client_id: str, role: str) -> None:
        """Admits one request of `client_id`, or raises RESOURCE_EXHAUSTED with the wait in retry_after."""
        limit = self.limit_for(client_id, role)
        if limit.requests_per_minute <= 0:
            return
        now = self.clock()
        bucket = self._bucket(client_id, limit, now)
        wait = bucket.take(now)
        if wait > 0:
            RATE_LIMITED.labels(role).inc()
            raise ResourceExhausted(
                f"rate limit of {limit.requests_per_minute:g} requests/minute (burst {limit.burst}) exceeded "
                f"for client {client_id!r}; retry in {wait:.1f}s",
                retry_after=wait,
            )

    def _bucket(self, client_id: str, limit: RateLimit, now: float) -> TokenBucket:
        rate = limit.requests_per_minute / 60.0
        burst = float(max(1, limit.burst))
        bucket = self.buckets.get(client_id)
        if bucket is None:
            if len(self.buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self.buckets[client_id] = TokenBucket(rate, burst, burst, now)
        elif bucket.rate != rate or bucket.burst != burst:
            bucket.refill(now)
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)
        return bucket

    def _prune(self, now: float) -> None:
        self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
