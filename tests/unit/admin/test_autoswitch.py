"""The auto-switch rule over a synthetic week of usage and live queue states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from aigw_server.admin.autoswitch import (
    COOLDOWN,
    STAY,
    SWITCH,
    WAIT_IDLE,
    BackendView,
    Demand,
    Settings,
    UsageCount,
    estimate_demand,
    hour_of_week,
    plan,
)

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
SETTINGS = Settings(window_days=7, cooldown_seconds=300, demand_margin=2.0)
MODELS = ("day-chat", "night-chat")


def office_week() -> list[UsageCount]:
    """day-chat: 40 requests an hour in office hours (Mon-Fri 09-17 UTC); night-chat: 10 an hour otherwise."""
    usage = []
    for hour in range(168):
        day, clock = divmod(hour, 24)
        office = day < 5 and 9 <= clock < 17
        usage.append(UsageCount("day-chat" if office else "night-chat", hour, 40 if office else 10))
    return usage


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def backend(current: str = "night-chat", in_flight: int = 0, state: str = "ready", name: str = "gpu-0") -> BackendView:
    return BackendView(name, MODELS, (current,) if current else (), in_flight, state)


def demand_at(now: datetime, queued: dict[str, int] | None = None) -> dict[str, Demand]:
    return estimate_demand(office_week(), queued or {}, MODELS, now, 7)


def decide(
    now: datetime, view: BackendView, queued: dict[str, int] | None = None, last: datetime | None = None
) -> tuple[str, str, str]:
    last_switch = {view.name: last} if last else {}
    [d] = plan([view], demand_at(now, queued), last_switch, now, SETTINGS)
    return d.action, d.to_model, d.reason


def test_hour_of_week_starts_monday_midnight_utc() -> None:
    assert hour_of_week(MONDAY) == 0
    assert hour_of_week(at(6, 23, 59)) == 167
    berlin_tuesday_2am = datetime(2026, 11, 24, 2, tzinfo=timezone(timedelta(hours=1)))
    assert hour_of_week(berlin_tuesday_2am) == 25
    with pytest.raises(ValueError, match="timezone"):
        hour_of_week(datetime(2026, 11, 23))


def test_demand_follows_the_week_and_averages_the_coming_hour() -> None:
    assert demand_at(at(0, 10))["day-chat"].expected == 40
    assert demand_at(at(0, 10))["night-chat"].expected == 0
    assert demand_at(at(0, 8, 30))["day-chat"].expected == 20
    assert demand_at(at(0, 8, 30))["night-chat"].expected == 5
    assert demand_at(at(5, 3))["night-chat"].expected == 10
    two_weeks = estimate_demand(office_week(), {"day-chat": 3}, MODELS, at(0, 10), 14)
    assert two_weeks["day-chat"].expected == 20
    assert two_weeks["day-chat"].score == 23


def test_office_hours_switch_to_the_day_model_and_nights_back() -> None:
    action, target, reason = decide(at(0, 10), backend("night-chat"))
    assert (action, target) == (SWITCH, "day-chat")
    assert "day-chat's demand 40 exceeds night-chat's 0" in reason
    assert decide(at(5, 3), backend("day-chat"))[:2] == (SWITCH, "night-chat")
    assert decide(at(0, 10), backend("day-chat"))[:2] == (STAY, "day-chat")


def test_a_busy_backend_waits_until_idle() -> None:
    assert decide(at(0, 10), backend("night-chat", in_flight=2))[:2] == (WAIT_IDLE, "day-chat")
    for state in ("loading", "draining", "crashed"):
        action, _, reason = decide(at(0, 10), backend("night-chat", state=state))
        assert action == WAIT_IDLE
        assert state in reason


def test_cooldown_holds_a_recent_switch() -> None:
    now = at(0, 10)
    action, target, reason = decide(now, backend("night-chat"), last=now - timedelta(seconds=100))
    assert (action, target) == (COOLDOWN, "day-chat")
    assert "200 s" in reason
    assert decide(now, backend("night-chat"), last=now - timedelta(seconds=300))[0] == SWITCH


def test_queued_work_keeps_its_model_unless_clearly_outweighed() -> None:
    now = at(0, 10)
    action, target, reason = decide(now, backend("night-chat"), queued={"night-chat": 30})
    assert (action, target) == (STAY, "night-chat")
    assert "30 queued" in reason
    assert decide(now, backend("night-chat"), queued={"night-chat": 20})[:2] == (STAY, "night-chat")
    assert decide(now, backend("night-chat"), queued={"night-chat": 19})[:2] == (SWITCH, "day-chat")


def test_margin_applies_only_with_queued_work() -> None:
    night = at(5, 3)
    assert decide(night, backend("day-chat"), queued={"night-chat": 0})[:2] == (SWITCH, "night-chat")
    assert decide(night, backend("day-chat"), queued={"day-chat": 6})[:2] == (STAY, "day-chat")
    assert decide(night, backend("day-chat"), queued={"day-chat": 4})[:2] == (SWITCH, "night-chat")


def test_queued_demand_for_an_unloaded_model_wins_off_pattern() -> None:
    night = at(5, 3)
    assert decide(night, backend("night-chat"), queued={"day-chat": 25})[:2] == (SWITCH, "day-chat")
    assert decide(night, backend("night-chat"), queued={"day-chat": 5})[:2] == (STAY, "night-chat")


def test_an_empty_backend_loads_the_model_in_demand_and_stays_empty_without_demand() -> None:
    assert decide(at(0, 10), backend(""))[:2] == (SWITCH, "day-chat")
    quiet = estimate_demand([], {}, MODELS, at(0, 10), 7)
    [d] = plan([backend("")], quiet, {}, at(0, 10), SETTINGS)
    assert (d.action, d.to_model) == (STAY, "")


def test_ties_keep_the_current_model() -> None:
    even = estimate_demand([], {"day-chat": 3, "night-chat": 3}, MODELS, at(0, 10), 7)
    [d] = plan([backend("night-chat")], even, {}, at(0, 10), SETTINGS)
    assert (d.action, d.to_model) == (STAY, "night-chat")


def test_a_model_held_elsewhere_is_not_loaded_twice() -> None:
    fixed = BackendView("fixed", ("day-chat",), ("day-chat",), 0, "ready", switchable=False)
    decisions = plan([fixed, backend("night-chat")], demand_at(at(0, 10)), {}, at(0, 10), SETTINGS)
    assert [(d.backend, d.action, d.to_model) for d in decisions] == [("gpu-0", STAY, "night-chat")]


def test_two_switchable_backends_split_the_demand() -> None:
    models = ("day-chat", "night-chat", "code-chat")
    demand = estimate_demand([], {"day-chat": 9, "code-chat": 5, "night-chat": 1}, models, at(0, 10), 7)
    a = BackendView("a", models, ("night-chat",))
    b = BackendView("b", models, ("night-chat",))
    decisions = plan([a, b], demand, {}, at(0, 10), SETTINGS)
    assert [(d.backend, d.action, d.to_model) for d in decisions] == [("a", SWITCH, "day-chat"), ("b", SWITCH, "code-chat")]


def test_unreachable_backends_are_left_alone() -> None:
    [d] = plan([backend("night-chat", state="unreachable")], demand_at(at(0, 10)), {}, at(0, 10), SETTINGS)
    assert (d.action, d.to_model) == (STAY, "night-chat")
    assert "unreachable" in d.reason


def test_decisions_carry_the_scores() -> None:
    [d] = plan([backend("night-chat")], demand_at(at(0, 10), {"night-chat": 1}), {}, at(0, 10), SETTINGS)
    assert d.scores == {"day-chat": 40.0, "night-chat": 1.0}


def test_a_simulated_week_switches_twice_a_weekday_and_never_while_busy() -> None:
    """Hourly cycles over a week: one switch at each office-hours edge, deferred while requests are in flight."""
    current, last, switches = "night-chat", None, []
    for hour in range(168):
        now = at(0, 0) + timedelta(hours=hour)
        busy = hour % 24 == 8
        view = backend(current, in_flight=1 if busy else 0)
        [d] = plan([view], demand_at(now), {view.name: last} if last else {}, now, SETTINGS)
        if d.action == SWITCH:
            current, last = d.to_model, now
            switches.append((hour, d.to_model))
    assert switches[:4] == [(9, "day-chat"), (17, "night-chat"), (33, "day-chat"), (41, "night-chat")]
    assert len(switches) == 10
