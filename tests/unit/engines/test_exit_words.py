"""How an engine's exit status is written into crash events: the code, and the signal that killed it."""

from __future__ import annotations

from aigw_server.engines.supervisor import exit_details, exit_words


def test_a_plain_exit_is_its_code() -> None:
    assert exit_words(3) == "code 3"
    assert exit_details(3, 41) == {"exit_code": "3", "pid": "41"}


def test_a_signal_is_named() -> None:
    assert exit_words(-11) == "code -11, signal SIGSEGV"
    assert exit_details(-9, 41) == {"exit_code": "-9", "pid": "41", "signal": "SIGKILL"}


def test_an_unknown_signal_number_keeps_the_code() -> None:
    assert exit_words(-200) == "code -200"
    assert "signal" not in exit_details(-200, 41)
