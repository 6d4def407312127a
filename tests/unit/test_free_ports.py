"""Ports the tests choose for one config never repeat, however often the kernel reuses a closed port."""

from __future__ import annotations

from tests.helpers import free_port


def test_ports_chosen_one_by_one_are_distinct() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
