"""Fixtures of the client tests: one stand-in gateway per session, its state fresh for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.client.gateway import GatewayState, StandInGateway, serving


@pytest.fixture(scope="session")
def stand_in() -> Iterator[tuple[StandInGateway, str]]:
    service = StandInGateway()
    with serving(service) as address:
        yield service, address


@pytest.fixture
def gateway(stand_in: tuple[StandInGateway, str]) -> GatewayState:
    """The stand-in's state, reset for this test (its calls, tokens and behaviour)."""
    service, _ = stand_in
    service.state.reset()
    return service.state


@pytest.fixture
def address(stand_in: tuple[StandInGateway, str], gateway: GatewayState) -> str:
    """host:port of the stand-in gateway (router and admin on one port)."""
    return stand_in[1]
