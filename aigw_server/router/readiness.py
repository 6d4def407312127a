"""Whether the mesh can serve (`GET /health` is its readiness) and what each part of it is doing, in words."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SERVING = "serving"
UNREACHABLE = "unreachable"
STARTING = "starting"
# Backend states an operator chose (a stopped or sleeping model): the mesh is as asked, not broken.
SETTLED = frozenset({SERVING, "stopped", "sleeping"})


@dataclass(frozen=True)
class Readiness:
    """The mesh's readiness: `ready` (200) or not (503), `status` ("ok" or "degraded") and each component's state."""

    ready: bool
    status: str
    components: dict[str, str]

    def explanation(self) -> str:
        """Why it is not ready, naming each component that is not serving."""
        waiting = ", ".join(f"{name} {state}" for name, state in sorted(self.components.items()) if state not in SETTLED)
        return f"the gateway is not ready to serve yet ({waiting}); try again shortly"


def assess(queue: str, admin: str, backends: Iterable[tuple[str, str]]) -> Readiness:
    """Ready when the queue and admin serve (requests are admitted, tokens issued) and the backends can serve.

    The backends can serve when at least one serves a model, or when every one is stopped or asleep
    by an operator's choice (requests for their models then get a clear "stopped" answer). Ready
    with a backend loading, crashed, unreachable or down is "degraded".
    """
    states = dict(backends)
    components = {"queue": queue, "admin": admin, **states}
    backends_can_serve = not states or SERVING in states.values() or set(states.values()) <= SETTLED
    ready = queue == SERVING and admin == SERVING and backends_can_serve
    status = "ok" if set(states.values()) <= SETTLED else "degraded"
    return Readiness(ready, status, components)
