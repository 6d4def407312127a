"""The per-client token bucket: bursts, refill, overrides, retry hints and the metric of refusals."""

from __future__ import annotations

import pytest

from aigw_server.router.ratelimit import PRUNE_AT, RATE_LIMITED, RateLimiter
from aigw_server.runtime.config import RateLimit, RateLimitConfig
from aigw_server.runtime.errors import ResourceExhausted


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(cfg: RateLimitConfig | None = None) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(cfg or RateLimitConfig(), clock), clock


def admitted(lim: RateLimiter, client: str, role: str = "user", times: int = 1) -> int:
    ok = 0
    for _ in range(times):
        try:
            lim.check(client, role)
        except ResourceExhausted:
            continue
        ok += 1
    return ok


def test_default_burst_then_refusal_with_retry_hint() -> None:
    lim, _ = limiter()
    assert admitted(lim, "a", times=10) == 10
    with pytest.raises(ResourceExhausted, match="60 requests/minute") as info:
        lim.check("a", "user")
    assert info.value.retry_after == pytest.approx(1.0)


def test_the_61st_request_within_a_minute_is_refused_and_another_client_is_not() -> None:
    lim, clock = limiter(RateLimitConfig(default=RateLimit(60, 60)))
    for _ in range(60):
        lim.check("a", "user")
        clock.now += 0.001
    with pytest.raises(ResourceExhausted):
        lim.check("a", "user")
    lim.check("b", "user")


def test_bucket_refills_at_the_sustained_rate() -> None:
    lim, clock = limiter(RateLimitConfig(default=RateLimit(60, 2)))
    assert admitted(lim, "a", times=3) == 2
    clock.now += 0.5
    assert admitted(lim, "a") == 0
    clock.now += 0.5
    assert admitted(lim, "a") == 1
    clock.now += 3600
    assert admitted(lim, "a", times=5) == 2


def test_client_override_wins_over_role_override() -> None:
    cfg = RateLimitConfig(
        default=RateLimit(60, 1),
        clients={"batch": RateLimit(60, 5)},
        roles={"admin": RateLimit(60, 3)},
    )
    lim, _ = limiter(cfg)
    assert admitted(lim, "someone", "user", 10) == 1
    assert admitted(lim, "ops", "admin", 10) == 3
    assert admitted(lim, "batch", "admin", 10) == 5


def test_zero_rate_means_unlimited() -> None:
    lim, _ = limiter(RateLimitConfig(roles={"admin": RateLimit(0, 0)}))
    assert admitted(lim, "root", "admin", 500) == 500


def test_refusals_are_counted_by_role() -> None:
    lim, _ = limiter(RateLimitConfig(default=RateLimit(60, 1)))
    before = RATE_LIMITED.labels("user")._value.get()
    admitted(lim, "a", times=4)
    assert RATE_LIMITED.labels("user")._value.get() == before + 3


def test_full_idle_buckets_are_forgotten() -> None:
    lim, clock = limiter(RateLimitConfig(default=RateLimit(600, 1)))
    for i in range(PRUNE_AT):
        lim.check(f"c{i}", "user")
    clock.now += 1
    lim.check("late", "user")
    assert set(lim.buckets) == {"late"}
