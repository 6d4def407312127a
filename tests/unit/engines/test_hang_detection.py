"""When a supervised model server counts as hung: failed health checks in a row spanning `hang_timeout`."""

from __future__ import annotations

import signal
from typing import Any, cast

from aigw_server.engines.process import ServerProcess
from aigw_server.engines.supervisor import EngineSupervisor, ServerState


class Signals:
    """Stands for the server's process group: records the signals sent to it."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def signal_group(self, sig: int) -> None:
        self.sent.append(sig)


class NoCrashLog:
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing crashed")


def supervisor(hang_timeout: float) -> tuple[EngineSupervisor, Signals]:
    async def healthy() -> bool:
        return True

    def on_state(state: ServerState, detail: str) -> None:
        del state, detail

    sup = EngineSupervisor(
        ["true"],
        {},
        label="gpu-0/tiny",
        model="tiny",
        healthy=healthy,
        startup_timeout=10,
        hang_timeout=hang_timeout,
        crash_log=cast(Any, NoCrashLog()),
        on_state=on_state,
    )
    signals = Signals()
    sup.process = cast(ServerProcess, signals)
    return sup, signals


def test_a_busy_server_that_misses_a_few_quick_checks_is_left_alone() -> None:
    sup, signals = supervisor(hang_timeout=30)
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 10.0):  # six misses in a row, but over 10 s only
        sup.check_health(False, now=t)
    assert signals.sent == []


def test_an_answer_resets_the_count() -> None:
    sup, signals = supervisor(hang_timeout=5)
    for t in (0.0, 3.0):
        sup.check_health(False, now=t)
    sup.check_health(True, now=4.0)
    for t in (5.0, 7.0, 9.0):  # a new run of misses, 4 s long
        sup.check_health(False, now=t)
    assert signals.sent == []


def test_a_server_silent_for_the_hang_timeout_is_killed() -> None:
    sup, signals = supervisor(hang_timeout=5)
    for t in (0.0, 2.0, 4.0):
        sup.check_health(False, now=t)
    assert signals.sent == []  # three misses, but not yet 5 s
    sup.check_health(False, now=6.0)
    assert signals.sent == [signal.SIGKILL]


def test_a_long_timeout_still_needs_three_misses() -> None:
    sup, signals = supervisor(hang_timeout=1)
    sup.check_health(False, now=0.0)
    sup.check_health(False, now=100.0)
    assert signals.sent == []
    sup.check_health(False, now=101.0)
    assert signals.sent == [signal.SIGKILL]
