"""The router's live view of its backends: status, down marks and its own in-flight calls (no I/O)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aigw_server.router.policies import RoutingPolicy, Saturation, make_policy
from aigw_server.runtime.config import BackendConfig, RoutingConfig

# A backend's reported state in the words of `GET /health` ("ready" becomes "serving" or "starting").
BACKEND_STATE_WORDS = {"idle": "stopped", "unspecified": "unknown"}


@dataclass(frozen=True)
class StatusReport:
    """One GetStatus answer of a backend, reduced to what routing uses."""

    state: str
    loaded_models: frozenset[str]
    in_flight: int
    capacity: int
    server_waiting: int = -1
    kv_cache_usage: float = -1.0
    detail: str = ""
    serving: bool = True
    server_running: int = -1
    languages: frozenset[str] = frozenset()


@dataclass
class BackendView:
    """What the router knows about one backend now."""

    name: str
    kind: str
    capacity: int
    reachable: bool = False
    serving: bool = False
    state: str = "unknown"
    loaded: frozenset[str] = frozenset()
    reported_in_flight: int = 0
    server_waiting: int = -1
    kv_cache_usage: float = -1.0
    detail: str = "not polled yet"
    local_in_flight: int = 0
    local_at_report: int = 0
    down_until: float = 0.0
    languages: frozenset[str] = frozenset()
    answered: bool = False

    @property
    def in_flight(self) -> int:
        """Reported in-flight plus this router's calls started since the report (never below its own)."""
        return max(self.local_in_flight, self.reported_in_flight + self.local_in_flight - self.local_at_report)

    @property
    def load(self) -> float:
        """Work in hand relative to capacity: (in flight + waiting in the model server) / capacity."""
        return (self.in_flight + max(0, self.server_waiting)) / max(1, self.capacity)

    def holds(self, model: str, now: float) -> bool:
        return self.serving and now >= self.down_until and self.state == "ready" and model in self.loaded

    def summary(self, now: float) -> str:
        """What the backend is doing, in words (docs/router.md lists them)."""
        if not self.reachable:
            return "unreachable"
        if now < self.down_until:
            return "down"
        if self.state == "ready":
            return "serving" if self.serving else "starting"
        return BACKEND_STATE_WORDS.get(self.state, self.state)


@dataclass
class BackendPool:
    """Every configured backend's view, and the choice among those holding a model."""

    backends: Sequence[BackendConfig]
    routing: RoutingConfig
    clock: Callable[[], float] = time.monotonic
    views: dict[str, BackendView] = field(init=False)
    policy: RoutingPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.views = {b.name: BackendView(b.name, b.kind, b.capacity) for b in self.backends}
        saturation = Saturation(self.routing.saturation_threshold, self.routing.kv_cache_threshold)
        self.policy = make_policy(self.routing.policy, saturation)

    def observe(self, name: str, report: StatusReport | None, error: str = "") -> None:
        """Records a status poll: the report, or None with the reason when the backend did not answer."""
        view = self.views[name]
        view.answered = report is not None
        if report is None:
            view.reachable, view.serving, view.detail = False, False, error
            return
        view.reachable = True
        view.serving = report.serving
        view.state = report.state
        view.loaded = report.loaded_models
        # Routers calling the engine directly pass textgen by: the engine's own count shows their work.
        view.reported_in_flight = max(report.in_flight, report.server_running)
        view.local_at_report = view.local_in_flight
        view.capacity = report.capacity or view.capacity
        view.server_waiting = report.server_waiting
        view.kv_cache_usage = report.kv_cache_usage
        view.detail = report.detail
        view.languages = report.languages

    def mark_down(self, name: str, reason: str) -> None:
        """A call failed: no new work goes there for down_retry_seconds (then a good poll brings it back)."""
        view = self.views[name]
        view.down_until = self.clock() + self.routing.down_retry_seconds
        view.detail = reason

    def forget_model(self, name: str, model: str) -> None:
        """The backend said it does not hold `model`: believe it until the next poll."""
        view = self.views[name]
        view.loaded = view.loaded - {model}

    def started(self, name: str) -> None:
        self.views[name].local_in_flight += 1

    def finished(self, name: str) -> None:
        self.views[name].local_in_flight -= 1

    def candidates(self, model: str) -> list[BackendView]:
        now = self.clock()
        return [v for v in self.views.values() if v.holds(model, now)]

    def choose(self, model: str, affinity_key: str = "") -> BackendView | None:
        """The backend to run `model` on now, by the configured policy; None when no healthy backend holds it."""
        candidates = self.candidates(model)
        if not candidates:
            return None
        return self.policy.choose(candidates, affinity_key)

    def languages(self, model: str) -> frozenset[str] | None:
        """The OCR language codes the backends configured for `model` last reported; None when none has reported."""
        serving = {b.name for b in self.backends if model in b.models}
        reported = [v.languages for v in self.views.values() if v.name in serving and v.languages]
        return frozenset().union(*reported) if reported else None

    def stopped(self, model: str) -> bool:
        """Every backend configured for `model` answers and holds something else or nothing, none loading: stopped.

        A loading, sleeping, crashed or unreachable backend may bring the model back by itself, so it is not stopped.
        """
        now = self.clock()
        views = [self.views[b.name] for b in self.backends if model in b.models]
        return bool(views) and all(
            v.answered and now >= v.down_until and v.state in ("idle", "ready") and model not in v.loaded for v in views
        )

    def servable_models(self) -> set[str]:
        """Models at least one healthy backend holds now."""
        now = self.clock()
        return {m for v in self.views.values() for m in v.loaded if v.holds(m, now)}

    def summaries(self) -> Iterable[tuple[str, str]]:
        now = self.clock()
        return ((f"{v.kind}:{v.name}", v.summary(now)) for v in self.views.values())
