"""The auto-switch rule: which model each switchable backend should hold, from usage patterns and live queues.

Pure: no I/O, no clock of its own (the caller passes `now`). The rule, as documented in docs/admin.md:

- demand(m) = expected(m) + queued(m), where expected(m) is the mean request count of the current and
  the next hour of the week over the usage window (divided by the window's weeks, at least one), and
  queued(m) is the number of requests waiting in m's queue now;
- for each switchable backend, in config order, the target is its model with the highest demand among
  those not held by another backend (ties keep the current model); a backend holding nothing loads its
  target when that has any demand;
- a backend whose current model has queued work switches only when demand(target) > margin * demand(current);
  otherwise only when demand(target) > demand(current);
- a switch happens only when the backend is idle (no request in flight, not loading, draining or
  crashed) and its last switch is at least `cooldown_seconds` ago.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Re-exported: the usage rows the rule reads, defined beside the queue client that reports them.
from aigw_server.runtime.usage import UsageCount as UsageCount

HOURS_PER_WEEK = 168
BUSY_STATES = frozenset({"loading", "draining", "crashed"})

SWITCH = "switch"
STAY = "stay"
WAIT_IDLE = "wait_idle"
COOLDOWN = "cooldown"
FAILED = "failed"


@dataclass(frozen=True)
class Demand:
    """How much a model is wanted now."""

    model: str
    expected: float
    queued: int

    @property
    def score(self) -> float:
        return self.expected + self.queued


@dataclass(frozen=True)
class BackendView:
    """What the planner knows of one backend."""

    name: str
    models: tuple[str, ...]
    loaded: tuple[str, ...] = ()
    in_flight: int = 0
    state: str = "ready"
    switchable: bool = True

    @property
    def current(self) -> str:
        return self.loaded[0] if self.loaded else ""


@dataclass(frozen=True)
class Settings:
    """The rule's knobs (cfg.auto_switch)."""

    window_days: int = 7
    cooldown_seconds: float = 300.0
    demand_margin: float = 2.0


@dataclass(frozen=True)
class Decision:
    """What the planner wants for one backend, and why."""

    backend: str
    from_model: str
    to_model: str
    action: str
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)


def hour_of_week(now: datetime) -> int:
    """0 = Monday 00:00 UTC, 167 = Sunday 23:00 UTC."""
    if now.tzinfo is None:
        raise ValueError("hour_of_week needs a timezone-aware time")
    utc = now.astimezone(UTC)
    return utc.weekday() * 24 + utc.hour


def estimate_demand(
    usage: Iterable[UsageCount], queued: Mapping[str, int], models: Iterable[str], now: datetime, window_days: int
) -> dict[str, Demand]:
    """Demand of each model: the usage pattern's expectation for the coming hour plus its queue now."""
    hour = hour_of_week(now)
    slots = {hour, (hour + 1) % HOURS_PER_WEEK}
    weeks = max(1.0, window_days / 7)
    counts: dict[str, int] = {}
    for bucket in usage:
        if bucket.hour_of_week in slots:
            counts[bucket.model] = counts.get(bucket.model, 0) + bucket.count
    return {m: Demand(m, counts.get(m, 0) / (len(slots) * weeks), max(0, queued.get(m, 0))) for m in dict.fromkeys(models)}


def plan(
    backends: Sequence[BackendView],
    demand: Mapping[str, Demand],
    last_switch: Mapping[str, datetime],
    now: datetime,
    settings: Settings,
) -> list[Decision]:
    """One decision per switchable backend, in order; later backends see the earlier ones' targets."""
    holding = {b.name: b.current for b in backends}
    decisions = []
    for backend in backends:
        if not backend.switchable:
            continue
        taken = {m for name, m in holding.items() if name != backend.name and m}
        decision = _decide(backend, taken, demand, last_switch.get(backend.name), now, settings)
        if decision.action == SWITCH:
            holding[backend.name] = decision.to_model
        decisions.append(decision)
    return decisions


def _score(demand: Mapping[str, Demand], model: str) -> float:
    d = demand.get(model)
    return d.score if d else 0.0


def _queued(demand: Mapping[str, Demand], model: str) -> int:
    d = demand.get(model)
    return d.queued if d else 0


def _decide(
    backend: BackendView,
    taken: set[str],
    demand: Mapping[str, Demand],
    last: datetime | None,
    now: datetime,
    settings: Settings,
) -> Decision:
    current = backend.current
    scores = {m: round(_score(demand, m), 3) for m in backend.models}

    def decision(action: str, target: str, reason: str) -> Decision:
        return Decision(backend.name, current, target, action, reason, scores)

    if backend.state == "unreachable":
        return decision(STAY, current, "backend is unreachable; nothing planned")
    candidates = [m for m in backend.models if m not in taken or m == current]
    if not candidates:
        return decision(STAY, current, "every model it can hold is already held by another backend")
    target = max(candidates, key=lambda m: (_score(demand, m), m == current))
    s_target, s_current = _score(demand, target), _score(demand, current)
    if target == current:
        return decision(STAY, current, f"{current} has the highest demand ({s_current:g})")
    if s_target <= 0:
        return decision(STAY, current, "no demand for any model it can hold")
    allowed, why = _margin_rule(current, target, s_current, s_target, _queued(demand, current), settings.demand_margin)
    if not allowed:
        return decision(STAY, current, why)
    if backend.in_flight > 0 or backend.state in BUSY_STATES:
        busy = f"{backend.in_flight} request(s) in flight" if backend.in_flight > 0 else f"it is {backend.state}"
        return decision(WAIT_IDLE, target, f"{why}, but {busy}; switching once idle")
    if last is not None:
        remaining = settings.cooldown_seconds - (now - last).total_seconds()
        if remaining > 0:
            return decision(COOLDOWN, target, f"{why}, but the last switch is in cooldown for {remaining:.0f} s more")
    return decision(SWITCH, target, why)


def _margin_rule(current: str, target: str, s_current: float, s_target: float, queued: int, margin: float) -> tuple[bool, str]:
    """Whether demand allows leaving `current` for `target`, and why (queued work needs a clear margin)."""
    if not current:
        return True, f"nothing loaded and {target} has demand {s_target:g}"
    if queued == 0:
        return True, f"{target}'s demand {s_target:g} exceeds {current}'s {s_current:g}, which has nothing queued"
    if s_target > margin * s_current:
        return True, f"{target}'s demand {s_target:g} is more than {margin:g} x {current}'s {s_current:g} ({queued} queued)"
    return (
        False,
        f"{current} has {queued} queued request(s); {target}'s demand {s_target:g} is not more than {margin:g} x {s_current:g}",
    )
