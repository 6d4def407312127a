"""`GET /health` is readiness: 503 until the queue, admin and the backends can serve; each component's state in words."""

from __future__ import annotations

import pytest

from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.readiness import assess
from aigw_server.runtime.config import BackendConfig, RoutingConfig

SERVING = "serving"


def test_ready_when_queue_admin_and_a_backend_serve() -> None:
    r = assess(SERVING, SERVING, [("textgen:a", SERVING), ("ocr:b", SERVING)])
    assert (r.ready, r.status) == (True, "ok")
    assert r.components == {"queue": SERVING, "admin": SERVING, "textgen:a": SERVING, "ocr:b": SERVING}


@pytest.mark.parametrize(
    ("queue", "admin", "missing"),
    [("unreachable", SERVING, "queue unreachable"), (SERVING, "starting", "admin starting"), (SERVING, "unreachable", "admin")],
)
def test_not_ready_without_the_queue_or_admin(queue: str, admin: str, missing: str) -> None:
    r = assess(queue, admin, [("textgen:a", SERVING)])
    assert not r.ready
    assert missing in r.explanation()
    assert "textgen:a" not in r.explanation(), "a serving component is not named as the reason"


def test_not_ready_while_every_backend_is_still_loading_or_unreachable() -> None:
    r = assess(SERVING, SERVING, [("textgen:a", "loading"), ("ocr:b", "unreachable")])
    assert not r.ready
    assert "ocr:b unreachable" in r.explanation()
    assert "textgen:a loading" in r.explanation()


def test_ready_but_degraded_while_one_backend_serves_and_another_loads() -> None:
    r = assess(SERVING, SERVING, [("textgen:a", "loading"), ("ocr:b", SERVING)])
    assert (r.ready, r.status) == (True, "degraded")


def test_models_stopped_by_an_operator_leave_the_mesh_ready() -> None:
    assert assess(SERVING, SERVING, [("textgen:a", "stopped"), ("ocr:b", SERVING)]).status == "ok"
    everything_stopped = assess(SERVING, SERVING, [("textgen:a", "stopped"), ("ocr:b", "sleeping")])
    assert (everything_stopped.ready, everything_stopped.status) == (True, "ok")


def test_a_mesh_without_backends_is_ready_with_queue_and_admin() -> None:
    assert assess(SERVING, SERVING, []).ready


def report(state: str, serving: bool) -> StatusReport:
    return StatusReport(
        state=state, loaded_models=frozenset({"m"}) if state == "ready" else frozenset(), in_flight=0, capacity=1, serving=serving
    )


@pytest.mark.parametrize(
    ("polled", "word"),
    [
        (report("ready", True), "serving"),
        (report("ready", False), "starting"),
        (report("idle", False), "stopped"),
        (report("loading", False), "loading"),
        (report("sleeping", False), "sleeping"),
        (report("crashed", False), "crashed"),
        (None, "unreachable"),
    ],
)
def test_a_backends_state_says_what_it_is(polled: StatusReport | None, word: str) -> None:
    pool = BackendPool([BackendConfig(name="a", address="127.0.0.1:1", models=("m",))], RoutingConfig())
    pool.observe("a", polled, "connection refused")
    assert dict(pool.summaries()) == {"textgen:a": word}
    assert (pool.choose("m") is not None) == (word == "serving")
