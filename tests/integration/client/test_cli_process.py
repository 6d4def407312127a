"""The `aigw` console script and the health probe as real processes: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.client.gateway import GatewayState, StandInGateway, serving

AIGW = Path(sys.executable).parent / "aigw"


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[GatewayState, str]]:
    service = StandInGateway()
    with serving(service) as address:
        yield service.state, address


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    return subprocess.run(args, env=full_env, input=stdin, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def env(gateway: tuple[GatewayState, str], tmp_path: Path) -> dict[str, str]:
    state, address = gateway
    state.reset()
    return {"AIGW_GRPC_ADDRESS": address, "AIGW_CONFIG_HOME": str(tmp_path), "AIGW_API_KEY": "key-admin"}


def test_the_console_script_chats_and_prints_json(env: dict[str, str]) -> None:
    assert AIGW.exists(), "the aigw console script is not installed (pyproject [project.scripts])"
    done = run([str(AIGW), "chat", "Hello", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "echo: Hello"


def test_errors_exit_with_their_code_and_no_traceback(env: dict[str, str], gateway: tuple[GatewayState, str]) -> None:
    gateway[0].full_times = 1
    limited = run([sys.executable, "-m", "aigw_client.cli", "chat", "full"], env)
    assert limited.returncode == 4
    assert "queue of tiny-chat is full" in limited.stderr
    assert "Traceback" not in limited.stderr
    usage = run([sys.executable, "-m", "aigw_client.cli", "chat", "x", "--priority", "urgent"], env)
    assert usage.returncode == 2
    assert "invalid choice" in usage.stderr


def test_login_from_stdin_writes_an_owner_only_credentials_file(env: dict[str, str], tmp_path: Path) -> None:
    del env["AIGW_API_KEY"]
    done = run([str(AIGW), "login", "-u", "admin", "--password-stdin"], env, stdin="correct horse battery\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    models = run([str(AIGW), "admin", "models", "--json"], env)
    assert models.returncode == 0
    assert json.loads(models.stdout)["models"][0]["model"] == "tiny-chat"


def test_the_health_probe_process(gateway: tuple[GatewayState, str]) -> None:
    probe = run([sys.executable, "-m", "aigw_server.runtime.healthcheck", gateway[1]], {})
    assert probe.returncode == 0
    assert probe.stderr == ""
