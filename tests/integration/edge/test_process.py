"""`python -m aigw_server.edge` as the launcher runs it: serves the configured port and metrics, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def edge_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    port, metrics_port, router_port = free_port(), free_port(), free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "metrics_port": metrics_port},
        "services": {"router": {"port": router_port}},
        "mesh_tls": {"mode": "plaintext"},
        "data_dir": str(tmp_path),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "AIGW_CONFIG": str(tmp_path / "config.yaml"), "PYTHONPATH": f"{REPO}:{REPO / 'gen'}"}
    with subprocess.Popen([sys.executable, "-m", "aigw_server.edge"], cwd=REPO, env=env, stderr=subprocess.PIPE) as proc:
        yield proc, port, metrics_port
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def test_serves_liveness_readiness_metrics_then_stops_on_sigterm(edge_process: tuple[subprocess.Popen[bytes], int, int]) -> None:
    proc, port, metrics_port = edge_process
    wait_listening(port, 20)
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert health.status_code == 503
    assert health.json()["code"] == 14
    live = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
    assert (live.status_code, live.json()) == (200, {"status": "live"}), "alive, though not ready with the router down"
    assert httpx.post(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 405
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'aigw_edge_requests_total{rpc="RouterService/GetHealth",status="503"} 1.0' in metrics
    assert "aigw_edge_open_connections" in metrics
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
