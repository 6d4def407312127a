"""DeepSeek-OCR served by vLLM: its OpenAI-compatible chat API with images, supervised or attached by URL.

Request shape, prompts and sampling follow vLLM's DeepSeek-OCR recipe
(https://docs.vllm.ai/projects/recipes/en/latest/DeepSeek/DeepSeek-OCR.html): temperature 0, special tokens kept,
and the per-request arguments of its n-gram no-repeat logits processor.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
from collections.abc import Callable
from io import BytesIO
from typing import Any

from PIL import Image

from aigw_server.engines.openai_http import EngineClient
from aigw_server.engines.supervisor import CrashSink, EngineSupervisor, ServerState
from aigw_server.ocr.languages import BY_TESSERACT, LanguageIdentification, script_of_text
from aigw_server.ocr.ocr_engine import EngineHealth, EngineState
from aigw_server.ocr.resolution import Mode, RenderSpec, deepseek_render
from aigw_server.ocr.results import Box, Line, OutputFormat, PageImage, Recognition, RecognizeOptions
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import BackendConfig, ModelConfig
from aigw_server.runtime.errors import GatewayError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"
LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
PROMPTS = {
    OutputFormat.MARKDOWN: "<image>\n<|grounding|>Convert the document to markdown.",
    OutputFormat.TEXT: "<image>\nFree OCR.",
}
# The recipe's n-gram processor arguments; 128821/128822 are <td> and </td>, which tables legitimately repeat.
NGRAM_ARGS: dict[str, Any] = {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
# Grounded output: <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|> before each block, boxes on a 0-999 grid.
_GROUNDING = re.compile(r"<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>", re.DOTALL)
_BOX = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")
# DeepSeek's end-of-sentence token is written with fullwidth bars and lower-one-eighth blocks.
_SPECIAL = re.compile("<\uff5cend\u2581of\u2581sentence\uff5c>|" + r"<\|/?(?:ref|det|grounding)\|>")
GRID = 999
PROBE_SECONDS = 2.0


def served_name(name: str, model: ModelConfig) -> str:
    """The name the model server knows the model by."""
    return model.served_name or name


def server_command(backend: BackendConfig, name: str, model: ModelConfig) -> list[str]:
    """`vllm serve` with the recipe's flags (`backend.command` replaces the `vllm serve` prefix when set)."""
    program = list(backend.command) or ["vllm", "serve"]
    argv = [
        *program,
        model.path or DEFAULT_MODEL,
        "--served-model-name",
        served_name(name, model),
        "--host",
        "127.0.0.1",
        "--port",
        str(backend.port),
        "--logits_processors",
        LOGITS_PROCESSOR,
        "--no-enable-prefix-caching",
        "--mm-processor-cache-gb",
        "0",
        "--gpu-memory-utilization",
        f"{backend.gpu_memory_utilization:g}",
    ]
    if backend.max_model_len:
        argv += ["--max-model-len", str(backend.max_model_len)]
    return argv


def data_url(image: Image.Image) -> str:
    """The image as a PNG data URL (lossless; compression kept light since it only crosses loopback or a LAN)."""
    out = BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def chat_request(model: str, image_url: str, output_format: OutputFormat) -> dict[str, Any]:
    """The body of POST /v1/chat/completions for one page."""
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": PROMPTS[output_format]},
                ],
            }
        ],
        "temperature": 0.0,
        "skip_special_tokens": False,
        "vllm_xargs": NGRAM_ARGS,
    }


def parse_output(content: str, width: int, height: int) -> tuple[str, tuple[Line, ...]]:
    """Clean text (grounding tags and special tokens removed) and one layout line per grounded block."""
    matches = list(_GROUNDING.finditer(content))
    lines: list[Line] = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(content)
        text = _SPECIAL.sub("", content[match.end() : end]).strip()
        for x1, y1, x2, y2 in (tuple(int(v) for v in b) for b in _BOX.findall(match.group(2))):
            box = Box(x1 * width // GRID, y1 * height // GRID, (x2 - x1) * width // GRID, (y2 - y1) * height // GRID)
            lines.append(Line(text or match.group(1), 0.0, box))
    text = _SPECIAL.sub("", _GROUNDING.sub("", content))
    return re.sub(r"\n{3,}", "\n\n", text).strip(), tuple(lines)


def base_url(url: str) -> str:
    """The server's root URL (an OpenAI-style base URL ending in /v1 is accepted too)."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


class DeepSeekOcrEngine:
    """DeepSeek-OCR on a vLLM server this backend supervises (`mode: supervise`) or attaches to (`mode: attach`).

    A supervised server runs under the shared engine supervisor (dies with this service, crashes and
    failed starts go to the crash log, restarts with backoff); requests go through the shared
    OpenAI-compatible client.
    """

    name = "deepseek-ocr"

    def __init__(
        self,
        backend: BackendConfig,
        pool: WorkerPool,
        identification: LanguageIdentification,
        crash_log: CrashSink,
    ) -> None:
        self.backend = backend
        self.pool = pool
        self.identification = identification
        self.crash_log = crash_log
        self.url = base_url(backend.url if backend.mode == "attach" else f"http://127.0.0.1:{backend.port}")
        self.client = EngineClient(self.url, capacity=backend.capacity, timeout=backend.request_timeout_seconds)
        self.server: EngineSupervisor | None = None
        self._model = ""
        self._served = ""
        self._state = EngineState.IDLE
        self._detail = ""
        self._crashed = ""
        self._changed: Callable[[], None] = lambda: None
        self._probing: asyncio.Task[None] | None = None

    @property
    def concurrency(self) -> int:
        return max(1, self.backend.capacity)

    def render_spec(self, mode: Mode) -> RenderSpec:
        return deepseek_render(mode)

    def languages(self) -> frozenset[str]:
        return frozenset(BY_TESSERACT)

    def health(self) -> EngineHealth:
        state, detail = self._state, self._detail
        if self._crashed:
            state, detail = EngineState.CRASHED, self._crashed
        restarts = self.server.restarts if self.server is not None else 0
        return EngineHealth(state, self._model, detail, restarts)

    def on_change(self, callback: Callable[[], None]) -> None:
        self._changed = callback

    def _server_state(self, state: ServerState, detail: str) -> None:
        """The supervisor's view: a crash (until a restart answers) shows as CRASHED."""
        crashed = (detail or "the model server crashed") if state is ServerState.CRASHED else ""
        if crashed != self._crashed:
            self._crashed = crashed
            self._changed()

    def _supervisor(self, name: str, model: ModelConfig) -> EngineSupervisor:
        port = self.backend.port
        return EngineSupervisor(
            server_command(self.backend, name, model),
            os.environ,
            label=f"{self.backend.name}/{name}",
            model=name,
            healthy=lambda: self.client.healthy("/health"),
            startup_timeout=self.backend.startup_timeout_seconds,
            hang_timeout=self.backend.hang_timeout_seconds,
            crash_log=self.crash_log,
            on_state=self._server_state,
            taken=f"port {port} is already taken by another server; stop it or change backends.{self.backend.name}.port",
        )

    async def load(self, name: str, model: ModelConfig) -> str:
        self._state, self._detail = EngineState.LOADING, ""
        served = served_name(name, model)
        try:
            if self.backend.mode == "supervise":
                self.server = self._supervisor(name, model)
                await self.server.start()
                self._probing = asyncio.create_task(self._probe(self.server), name=f"{self.backend.name}-probe")
            await self._check_served(served)
        except Unavailable as exc:
            await self._stop_server()
            self._state, self._detail = EngineState.IDLE, exc.message
            raise
        self._model, self._served, self._state = name, served, EngineState.READY
        how = "started" if self.backend.mode == "supervise" else f"attached to {self.url}"
        return f"DeepSeek-OCR {served} {how}"

    async def _check_served(self, served: str) -> None:
        try:
            answer = await self.client.control("GET", "/v1/models")
        except GatewayError:
            raise Unavailable(f"the DeepSeek-OCR server at {self.url} is unreachable") from None
        data = answer.get("data", []) if isinstance(answer, dict) else []
        ids = [m.get("id") for m in data if isinstance(m, dict)]
        if served not in ids:
            raise Unavailable(f"the DeepSeek-OCR server serves {', '.join(map(str, ids)) or 'nothing'}, not {served}")

    async def _probe(self, server: EngineSupervisor) -> None:
        """Health probes of a running server: one that stops answering is hung, and the supervisor kills it."""
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if not self._crashed:
                server.check_health(await self.client.healthy("/health"))

    async def _stop_server(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
            self._probing = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        self._crashed = ""

    async def unload(self) -> str:
        was = self._model
        await self._stop_server()
        self._model, self._served, self._state, self._detail = "", "", EngineState.IDLE, ""
        return f"unloaded {was}" if was else "nothing was loaded"

    async def close(self) -> None:
        await self.unload()
        await self.client.aclose()

    async def recognize(self, page: PageImage, options: RecognizeOptions) -> Recognition:
        url = await self.pool.run(data_url, page.image)
        body = chat_request(self._served, url, options.output_format)
        content = await self._complete(body, page.number)
        width, height = page.image.size
        text, lines = parse_output(content, width, height)
        script = script_of_text(text)
        guess = await self.pool.run(self.identification.identify, text, script)
        language = guess[0].tesseract if guess else (options.languages[0] if options.languages else "")
        return Recognition(text, language, script, 0.0, width, height, lines)

    async def _complete(self, body: dict[str, Any], number: int) -> str:
        try:
            answer = await self.client.chat(body, {})
        except InvalidArgument as exc:
            log.warning("model server rejected a page", extra={"page": number, "reason": exc.message})
            raise InvalidArgument(f"DeepSeek-OCR rejected page {number} (too large for the model's context?)") from None
        except Unavailable as exc:
            log.warning("model server failed", extra={"page": number, "reason": exc.message})
            raise Unavailable(f"DeepSeek-OCR failed on page {number}: {exc.message}") from None
        try:
            return str(answer["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise Unavailable(f"DeepSeek-OCR sent an unreadable answer for page {number}") from None
