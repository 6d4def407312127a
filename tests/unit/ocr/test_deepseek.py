"""DeepSeek-OCR on vLLM: request shapes, the serve command line, output parsing, and the engine against a peer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from aigw_server.ocr.deepseek import (
    NGRAM_ARGS,
    DeepSeekOcrEngine,
    base_url,
    chat_request,
    data_url,
    parse_output,
    server_command,
)
from aigw_server.ocr.languages import LanguageIdentification
from aigw_server.ocr.ocr_engine import EngineState
from aigw_server.ocr.resolution import Mode
from aigw_server.ocr.results import OutputFormat, PageImage, RecognizeOptions
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import BackendConfig, ModelConfig
from aigw_server.runtime.errors import InvalidArgument, Unavailable
from tests.helpers import free_port
from tests.unit.http_peer import HttpPeer
from tests.unit.ocr import samples

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")
MODEL = ModelConfig(kind="ocr", path="deepseek-ai/DeepSeek-OCR", served_name="deepseek-ocr")
END = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def options(fmt: OutputFormat = OutputFormat.TEXT) -> RecognizeOptions:
    return RecognizeOptions(Mode.GUNDAM, (), fmt, True)


def test_request_follows_the_vllm_recipe() -> None:
    image = Image.new("RGB", (300, 200), "white")
    body = chat_request("deepseek-ocr", data_url(image), OutputFormat.MARKDOWN)
    assert body["model"] == "deepseek-ocr"
    assert body["temperature"] == 0.0
    assert body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
    [message] = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": "<image>\n<|grounding|>Convert the document to markdown."}
    assert image_part["type"] == "image_url"
    prefix, encoded = image_part["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert Image.open(BytesIO(base64.b64decode(encoded))).size == (300, 200)
    assert chat_request("m", "data:,", OutputFormat.TEXT)["messages"][0]["content"][1]["text"] == "<image>\nFree OCR."
    assert json.loads(json.dumps(body)) == body


def test_serve_command_line() -> None:
    backend = BackendConfig(name="gpu-ocr", kind="ocr", engine="deepseek-ocr", port=8200, gpu_memory_utilization=0.8)
    assert server_command(backend, "deepseek-ocr", MODEL) == [
        "vllm",
        "serve",
        "deepseek-ai/DeepSeek-OCR",
        "--served-model-name",
        "deepseek-ocr",
        "--host",
        "127.0.0.1",
        "--port",
        "8200",
        "--logits_processors",
        "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor",
        "--no-enable-prefix-caching",
        "--mm-processor-cache-gb",
        "0",
        "--gpu-memory-utilization",
        "0.8",
    ]
    custom = BackendConfig(name="g", kind="ocr", command=("/opt/vllm/bin/vllm", "serve"), port=1, max_model_len=8192)
    argv = server_command(custom, "ocr", ModelConfig(kind="ocr"))
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", "deepseek-ai/DeepSeek-OCR"]
    assert argv[argv.index("--served-model-name") + 1] == "ocr"
    assert argv[-2:] == ["--max-model-len", "8192"]


def test_grounded_markdown_becomes_clean_text_and_boxes() -> None:
    content = (
        "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 150]]<|/det|>\n# Annual report\n\n"
        "<|ref|>text<|/ref|><|det|>[[100, 200, 500, 400]]<|/det|>\nRevenue grew by 12%.\n" + END
    )
    text, lines = parse_output(content, width=1000, height=2000)
    assert text == "# Annual report\n\nRevenue grew by 12%."
    assert [line.text for line in lines] == ["# Annual report", "Revenue grew by 12%."]
    box = lines[1].box
    assert (box.x, box.y, box.width, box.height) == (100, 400, 400, 400)


def test_plain_output_keeps_its_text() -> None:
    assert parse_output("Hello world\n" + END, 10, 10) == ("Hello world", ())


def test_base_url_accepts_an_openai_style_url() -> None:
    assert base_url("http://gpu-1:8000/v1/") == "http://gpu-1:8000"
    assert base_url("http://gpu-1:8000") == "http://gpu-1:8000"


class Peer:
    """An in-process OpenAI-compatible peer: records requests, answers as configured."""

    def __init__(self, served: str = "deepseek-ocr", status: int = 200, content: str = "Hello") -> None:
        self.served, self.status, self.content = served, status, content
        self.bodies: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": self.served}]})
        self.bodies.append(json.loads(request.content))
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "nope"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": self.content}}]})


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(2)
    yield pool
    pool.close()


class CrashLog:
    """Keeps the events the engine records."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, str]]] = []

    def record(self, kind: str, model: str, message: str, log_tail: Any = (), details: Any = None) -> None:
        self.events.append((kind, message, dict(details or {})))


def attached(peer: Peer, pool: WorkerPool, tmp_path: Path) -> DeepSeekOcrEngine:
    url = HttpPeer(peer).url + "/v1"
    backend = BackendConfig(name="gpu-ocr", kind="ocr", engine="deepseek-ocr", mode="attach", url=url)
    return DeepSeekOcrEngine(backend, pool, LanguageIdentification(), CrashLog())


async def test_attached_engine_recognises_pages(pool: WorkerPool, tmp_path: Path) -> None:
    peer = Peer(content="Der schnelle braune Fuchs springt über den Zaun und läuft davon." + END)
    engine = attached(peer, pool, tmp_path)
    assert await engine.load("deepseek-ocr", MODEL) == f"DeepSeek-OCR deepseek-ocr attached to {engine.url}"
    found = await engine.recognize(PageImage(3, Image.new("RGB", (640, 480), "white")), options(OutputFormat.MARKDOWN))
    assert found.text == "Der schnelle braune Fuchs springt über den Zaun und läuft davon."
    assert (found.language, found.script, found.width, found.height) == ("deu", "Latin", 640, 480)
    [body] = peer.bodies
    assert body["model"] == "deepseek-ocr"
    assert body["vllm_xargs"] == NGRAM_ARGS
    await engine.close()


async def test_attach_checks_the_served_model(pool: WorkerPool, tmp_path: Path) -> None:
    engine = attached(Peer(served="something-else"), pool, tmp_path)
    with pytest.raises(Unavailable, match="serves something-else, not deepseek-ocr"):
        await engine.load("deepseek-ocr", MODEL)
    assert engine.health().state is EngineState.IDLE
    await engine.close()


@pytest.mark.parametrize(("status", "error"), [(400, InvalidArgument), (503, Unavailable)])
async def test_model_server_errors(pool: WorkerPool, tmp_path: Path, status: int, error: type[Exception]) -> None:
    engine = attached(Peer(status=status), pool, tmp_path)
    await engine.load("deepseek-ocr", MODEL)
    with pytest.raises(error, match="page 2"):
        await engine.recognize(PageImage(2, Image.new("RGB", (64, 64))), options())
    await engine.close()


async def test_supervised_server_is_started_restarted_and_stopped(pool: WorkerPool, tmp_path: Path) -> None:
    backend = BackendConfig(
        name="gpu-ocr",
        kind="ocr",
        engine="deepseek-ocr",
        command=(sys.executable, str(FAKE_VLLM)),
        port=free_port(),
        startup_timeout_seconds=30,
    )
    crash_log = CrashLog()
    engine = DeepSeekOcrEngine(backend, pool, LanguageIdentification(), crash_log)
    assert await engine.load("deepseek-ocr", MODEL) == "DeepSeek-OCR deepseek-ocr started"
    page = PageImage(1, samples.text_image(samples.ENGLISH))
    found = await engine.recognize(page, options())
    assert found.text == f"prompt '<image>\\nFree OCR.' image {page.image.width}x{page.image.height}"
    assert len(found.lines) == 1
    assert engine.server is not None
    pid = engine.server.pid
    os.kill(pid, signal.SIGKILL)
    await until(lambda: engine.health().restarts == 1 and engine.health().state is EngineState.READY, timeout=30)
    restarted = engine.server.pid
    assert restarted != pid
    assert (await engine.recognize(page, options())).text == found.text
    await engine.unload()
    with pytest.raises(ProcessLookupError):
        os.kill(restarted, 0)
    assert engine.health().state is EngineState.IDLE
    kinds = [kind for kind, _, _ in crash_log.events]
    assert kinds == ["BACKEND_CRASH", "ENGINE_RESTART"]
    assert crash_log.events[0][1] == "the model server exited with code -9, signal SIGKILL"
    assert crash_log.events[0][2]["signal"] == "SIGKILL"
    await engine.close()


@pytest.mark.slow  # three missed probes of 2 s + 5 s each before the kill
async def test_a_hung_supervised_server_is_killed_and_restarted(pool: WorkerPool) -> None:
    backend = BackendConfig(
        name="gpu-ocr",
        kind="ocr",
        engine="deepseek-ocr",
        command=(sys.executable, str(FAKE_VLLM)),
        port=free_port(),
        startup_timeout_seconds=30,
        hang_timeout_seconds=5,
    )
    crash_log = CrashLog()
    engine = DeepSeekOcrEngine(backend, pool, LanguageIdentification(), crash_log)
    await engine.load("deepseek-ocr", MODEL)
    assert engine.server is not None
    hung = engine.server.pid
    os.kill(hung, signal.SIGSTOP)  # alive, answering nothing
    try:
        await until(lambda: engine.health().restarts == 1 and engine.health().state is EngineState.READY, timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    assert engine.server.pid != hung
    kind, message, _ = crash_log.events[0]
    assert kind == "BACKEND_CRASH"
    assert re.fullmatch(r"the model server stopped answering health checks \(3 in a row over \d+s\) and was killed", message)
    await engine.close()
