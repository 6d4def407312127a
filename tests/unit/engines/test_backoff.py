"""Exponential backoff between model server restarts."""

from __future__ import annotations

from aigw_server.engines.process import Backoff


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=5.0)

    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == backoff.initial
