"""`python -m aigw_server.textgen` as the launcher runs it: serves its backend's address, and its model server dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import psutil
import pytest
import yaml

from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from tests.helpers import free_port, wait_serving
from tests.integration.textgen.helpers import STARTUP_SECONDS, raw_config

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(300)


def test_model_server_dies_with_a_sigkilled_textgen_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    raw = raw_config(tiny_model_dir, port=free_port())
    raw["backends"][0]["address"] = address
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    env = {
        **os.environ,
        "AIGW_CONFIG": str(config_file),
        "AIGW_BACKEND": "cpu-test",
        "AIGW_DATA_DIR": str(tmp_path),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
    }
    log = tmp_path / "textgen.log"
    with log.open("wb") as out:
        textgen = subprocess.Popen(
            [sys.executable, "-m", "aigw_server.textgen"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    servers: list[psutil.Process] = []
    try:
        try:
            wait_serving(address, STARTUP_SECONDS)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from None
        servers = psutil.Process(textgen.pid).children(recursive=True)
        with grpc.insecure_channel(address) as channel:
            reply = textgen_pb2_grpc.TextgenServiceStub(channel).Generate(
                textgen_pb2.GenerateRequest(
                    model="tiny-chat", chat=common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="Hi")])
                ),
                timeout=60,
            )
        assert reply.result.usage.completion_tokens == 16
        assert servers, "textgen should have started a model server"

        textgen.send_signal(signal.SIGKILL)
        textgen.wait(timeout=10)

        _, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"model server outlived textgen: {[p.pid for p in alive]}"
    finally:
        textgen.kill()
        for proc in servers:
            if proc.is_running():
                proc.kill()
