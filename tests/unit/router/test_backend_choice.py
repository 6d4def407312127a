"""Backend choice: the live view of backends, down marks, in-flight accounting, and each policy's choices."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import pytest

from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.policies import affinity_key
from aigw_server.runtime.config import BackendConfig, RoutingConfig


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Policy = Literal["least_loaded", "prefix_affinity", "round_robin"]


def pool(
    policy: Policy = "least_loaded",
    names: tuple[str, ...] = ("a", "b"),
    down_retry_seconds: float = RoutingConfig.down_retry_seconds,
) -> tuple[BackendPool, Clock]:
    clock = Clock()
    backends = [BackendConfig(name=n, address=f"127.0.0.1:{i + 1}", models=("m",), capacity=10) for i, n in enumerate(names)]
    p = BackendPool(backends, RoutingConfig(policy=policy, down_retry_seconds=down_retry_seconds), clock)
    for n in names:
        p.observe(n, report())
    return p, clock


def report(
    in_flight: int = 0,
    state: str = "ready",
    models: tuple[str, ...] = ("m",),
    server_waiting: int = -1,
    server_running: int = -1,
    kv_cache_usage: float = -1.0,
) -> StatusReport:
    return StatusReport(
        state=state,
        loaded_models=frozenset(models),
        in_flight=in_flight,
        capacity=10,
        server_waiting=server_waiting,
        server_running=server_running,
        kv_cache_usage=kv_cache_usage,
    )


def shares(p: BackendPool, requests: int, duration: int, key: str = "") -> Counter[str]:
    """Sends one request per tick, each lasting `duration` ticks; counts where each went."""
    counts: Counter[str] = Counter()
    running: list[tuple[int, str]] = []
    for tick in range(requests):
        for end, name in [r for r in running if r[0] <= tick]:
            p.finished(name)
            running.remove((end, name))
        view = p.choose("m", key or f"conversation-{tick}")
        assert view is not None
        p.started(view.name)
        running.append((tick + duration, view.name))
        counts[view.name] += 1
    return counts


def test_only_ready_reachable_backends_holding_the_model_are_candidates() -> None:
    p, _ = pool(names=("a", "b", "c", "d"))
    p.observe("b", report(state="loading"))
    p.observe("c", None, "connection refused")
    p.observe("d", report(models=("other",)))
    assert [v.name for v in p.candidates("m")] == ["a"]
    assert p.servable_models() == {"m", "other"}
    assert dict(p.summaries())["textgen:c"] == "unreachable"


def test_a_failed_backend_is_down_until_the_retry_delay_passes() -> None:
    p, clock = pool(down_retry_seconds=5.0)
    p.mark_down("a", "upstream died")
    assert [v.name for v in p.candidates("m")] == ["b"]
    assert dict(p.summaries())["textgen:a"] == "down"
    clock.now += 5.0
    assert {v.name for v in p.candidates("m")} == {"a", "b"}


def test_a_backend_that_says_it_lacks_the_model_is_skipped_until_the_next_poll() -> None:
    p, _ = pool()
    p.forget_model("a", "m")
    assert [v.name for v in p.candidates("m")] == ["b"]
    p.observe("a", report())
    assert len(p.candidates("m")) == 2


def test_own_calls_count_between_polls_without_double_counting() -> None:
    p, _ = pool()
    p.observe("a", report(in_flight=2))
    for _ in range(3):
        p.started("a")
    assert p.views["a"].in_flight == 5
    p.observe("a", report(in_flight=5))
    assert p.views["a"].in_flight == 5
    p.finished("a")
    assert p.views["a"].in_flight == 4


def test_work_other_routers_send_straight_to_the_engine_counts_as_in_flight() -> None:
    p, _ = pool()
    p.observe("a", report(in_flight=0, server_running=6))
    p.observe("b", report(in_flight=2, server_running=1))

    assert (p.views["a"].in_flight, p.views["b"].in_flight) == (6, 2)
    choice = p.choose("m")
    assert choice is not None
    assert choice.name == "b"


def test_no_candidate_means_no_choice() -> None:
    p, _ = pool()
    assert p.choose("unknown-model") is None


def test_least_loaded_keeps_work_off_the_busier_backend() -> None:
    p, _ = pool("least_loaded")
    p.observe("a", report(in_flight=8))
    counts = shares(p, requests=200, duration=5)
    assert counts["a"] <= 0.1 * 200, counts


def test_round_robin_ignores_load() -> None:
    p, _ = pool("round_robin")
    p.observe("a", report(in_flight=8))
    assert shares(p, requests=200, duration=5) == Counter({"a": 100, "b": 100})


def test_least_loaded_shares_equal_backends_evenly() -> None:
    counts = shares(pool("least_loaded")[0], requests=200, duration=3)
    assert abs(counts["a"] - counts["b"]) <= 0.1 * 200, counts


@pytest.mark.parametrize(
    "saturating",
    [{"in_flight": 10}, {"kv_cache_usage": 0.97}, {"server_waiting": 12}],
)
def test_saturated_backends_get_nothing_while_another_has_room(saturating: dict[str, Any]) -> None:
    p, _ = pool("least_loaded")
    p.observe("a", report(**saturating))
    p.observe("b", report(in_flight=9))
    assert shares(p, requests=20, duration=1)["a"] == 0


def test_when_all_are_saturated_the_least_loaded_still_serves() -> None:
    p, _ = pool("least_loaded")
    p.observe("a", report(in_flight=12))
    p.observe("b", report(in_flight=10))
    view = p.choose("m")
    assert view is not None
    assert view.name == "b"


def test_prefix_affinity_keeps_a_conversation_on_one_backend() -> None:
    p, _ = pool("prefix_affinity", names=("a", "b", "c"))
    first = p.choose("m", affinity_key([("system", "be brief"), ("user", "tell me about cats")]))
    assert first is not None
    for turn in range(1, 6):
        messages = [("system", "be brief"), ("user", "tell me about cats"), ("assistant", "..."), ("user", f"more {turn}")]
        view = p.choose("m", affinity_key(messages))
        assert view is not None
        assert view.name == first.name
    spread = shares(p, requests=300, duration=1)
    assert min(spread.values()) >= 60, spread


def test_prefix_affinity_falls_back_to_least_loaded_when_its_backend_is_saturated() -> None:
    p, _ = pool("prefix_affinity")
    key = affinity_key([("user", "hello")])
    preferred = p.choose("m", key)
    assert preferred is not None
    other = "b" if preferred.name == "a" else "a"
    p.observe(preferred.name, report(in_flight=10))
    view = p.choose("m", key)
    assert view is not None
    assert view.name == other
