"""The tiny local model, built by tools/make_tiny_model.py, answers chat through a real `transformers serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tools.make_tiny_model import make_tiny_model

pytestmark = pytest.mark.timeout(300)

STARTUP_TIMEOUT_S = 180.0
MAX_TOKENS = 16


class Server:
    """A running `transformers serve` process serving the tiny model."""

    def __init__(self, base_url: str, model: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        """Remember the server's address, model name, process and log file."""
        self.base_url = base_url
        self.model = model
        self.proc = proc
        self.log = log

    def log_tail(self) -> str:
        """Return the end of the server's log, for failure messages."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""


def _serve_command(model_dir: Path, port: int) -> list[str]:
    """Return the command line that serves model_dir on 127.0.0.1:port."""
    exe = Path(sys.executable).parent / "transformers"
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-m", "transformers.cli.transformers"]
    return [
        *prefix,
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
    ]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Start `transformers serve` on the tiny model (built by make_tiny_model) on a free port; stop it after."""
    work = tmp_path_factory.mktemp("tiny_serve")
    model_dir = tiny_model_dir
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OTEL_SDK_DISABLED": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _serve_command(model_dir, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    srv = Server(f"http://127.0.0.1:{port}", str(model_dir), proc, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                if httpx.get(f"{srv.base_url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready in {STARTUP_TIMEOUT_S:.0f}s:\n{srv.log_tail()}")
            time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _chat_body(server: Server, **extra: Any) -> dict[str, Any]:
    """Return a chat completion request body for the tiny model."""
    return {
        "model": server.model,
        "messages": [
            {"role": "system", "content": "You are a tiny test model."},
            {"role": "user", "content": "Hello! What is a token?"},
        ],
        "max_tokens": MAX_TOKENS,
        **extra,
    }


def test_make_tiny_model_is_idempotent(tmp_path: Path) -> None:
    """A second build into a complete directory is skipped and leaves the files untouched."""
    out = make_tiny_model(tmp_path / "m")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(stamps)
    assert make_tiny_model(out) == out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_unary_chat_completion(server: Server) -> None:
    """A unary chat completion returns assistant text, max_tokens tokens and consistent usage."""
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        r = client.post("/v1/chat/completions", json=_chat_body(server, temperature=0))
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{server.log_tail()}"
        data = r.json()
        again = client.post("/v1/chat/completions", json=_chat_body(server, temperature=0)).json()

    assert data["object"] == "chat.completion"
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert isinstance(content, str)
    assert content.strip()
    assert content.isascii()
    # The tiny model never emits end-of-sequence, so it always runs to max_tokens.
    assert choice["finish_reason"] == "length"
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # temperature 0 is greedy decoding: the same prompt gives the same answer.
    assert again["choices"][0]["message"]["content"] == content


def test_streaming_chat_completion(server: Server) -> None:
    """A streaming chat completion yields SSE chunks: a role, several content deltas, then usage."""
    events: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=server.base_url, timeout=60.0) as client,
        client.stream("POST", "/v1/chat/completions", json=_chat_body(server, stream=True)) as r,
    ):
        assert r.status_code == 200, server.log_tail()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                break
            events.append(json.loads(payload))

    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"].get("role") == "assistant"
    pieces = [e["choices"][0]["delta"]["content"] for e in events if e["choices"][0]["delta"].get("content")]
    assert len(pieces) >= 5, events
    assert "".join(pieces).strip()
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["usage"]["completion_tokens"] == MAX_TOKENS
    assert last["usage"]["prompt_tokens"] > 0
