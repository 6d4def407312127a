"""`python -m aigw_server.runtime.healthcheck`: exit 0 only while the server says SERVING."""

from __future__ import annotations

import pytest

from aigw_server.runtime.healthcheck import check, main
from tests.helpers import free_port
from tests.unit.client.gateway import StandInGateway


def test_serving_exits_0_and_not_serving_exits_1(
    stand_in: tuple[StandInGateway, str], capsys: pytest.CaptureFixture[str]
) -> None:
    service, address = stand_in
    assert main([address]) == 0
    assert main([address, "--service", "aigw.router.v1.RouterService"]) == 0
    service.set_serving(False)
    try:
        assert check(address) == "NOT_SERVING"
        assert main([address]) == 1
    finally:
        service.set_serving(True)
    assert "NOT_SERVING" in capsys.readouterr().err


def test_unknown_service_and_unreachable_server_exit_1(
    stand_in: tuple[StandInGateway, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = stand_in
    assert main([address, "--service", "aigw.nope.v1.Nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([f"127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
