"""One OCR backend: validates requests, opens documents, runs pages through its engine in order, reports its state."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from aigw_server.ocr.document_reader import Document, DocumentLimits, open_document, page_range
from aigw_server.ocr.languages import LanguageIdentification, script_of_text
from aigw_server.ocr.ocr_engine import EngineState, OcrEngine, unknown_languages
from aigw_server.ocr.resolution import Mode, parse_mode
from aigw_server.ocr.results import OcrRequest, PageResult, RecognizeOptions, Source
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import BackendConfig, GatewayConfig
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

HealthHook = Callable[[bool], Awaitable[None]]

PAGES = Counter("aigw_ocr_pages_total", "Pages recognised or read", ["engine", "source"])
PAGE_SECONDS = Histogram(
    "aigw_ocr_page_seconds",
    "Time to produce one page",
    ["engine", "source"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class BackendView:
    """The backend's live status for routing and operators."""

    backend: str
    engine: str
    state: EngineState
    loaded_models: tuple[str, ...]
    available_models: tuple[str, ...]
    in_flight: int
    capacity: int
    detail: str
    restarts: int
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class LifecycleOutcome:
    """What a load or unload did."""

    status: BackendView
    outcome: str
    elapsed_ms: float


class DocumentRun:
    """One document being recognised: what it is, which pages, and the pages as they are done (in order)."""

    def __init__(self, backend: OcrBackend, document: Document, pages: range, options: RecognizeOptions, model: str) -> None:
        self.backend = backend
        self.document = document
        self.pages = pages
        self.options = options
        self.model = model

    @property
    def document_type(self) -> str:
        return self.document.kind

    @property
    def page_count(self) -> int:
        return self.document.page_count

    async def results(self) -> AsyncGenerator[PageResult, None]:
        """Pages in order, as soon as each and those before it are done.

        Up to the engine's concurrency are worked on at once; a page that finishes early frees its slot at once
        (its result waits for the pages before it), so a slow page never leaves a worker idle.
        """
        numbers = iter(self.pages)
        window = max(1, self.backend.engine.concurrency)
        running: set[asyncio.Task[PageResult]] = set()
        finished: dict[int, PageResult] = {}
        wanted = self.pages.start
        try:
            while wanted < self.pages.stop:
                while len(running) < window and (number := next(numbers, None)) is not None:
                    running.add(asyncio.create_task(self._page(number)))
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                errors = [error for task in done if (error := task.exception()) is not None]
                if errors:
                    raise errors[0]
                finished.update((page.page, page) for page in (task.result() for task in done))
                while wanted in finished:
                    yield finished.pop(wanted)
                    wanted += 1
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _page(self, number: int) -> PageResult:
        started = time.perf_counter()
        pool = self.backend.pool
        if self.document.kind == "pdf":
            page = await pool.run(self._text_layer_page, number)
            if page is not None:
                return _timed(page, started, self.backend.engine.name)
        image = await pool.run(self.document.page_image, number, self.backend.engine.render_spec(self.options.mode))
        found = await self.backend.engine.recognize(image, self.options)
        page = PageResult(
            number,
            found.text,
            Source.OCR,
            found.language,
            found.script,
            found.confidence,
            found.lines if self.options.include_layout else (),
            found.width,
            found.height,
        )
        return _timed(page, started, self.backend.engine.name)

    def _text_layer_page(self, number: int) -> PageResult | None:
        layer = self.document.text_layer(number, self.options.include_layout)
        if layer is None:
            return None
        script = script_of_text(layer.text)
        guess = self.backend.identification.identify(layer.text, script)
        requested = self.options.languages[0] if self.options.languages else ""
        language = guess[0].tesseract if guess else requested
        return PageResult(number, layer.text, Source.TEXT_LAYER, language, script, 100.0, layer.lines)


def _timed(page: PageResult, started: float, engine: str) -> PageResult:
    elapsed = time.perf_counter() - started
    PAGES.labels(engine, page.source.value).inc()
    PAGE_SECONDS.labels(engine, page.source.value).observe(elapsed)
    return dataclasses.replace(page, elapsed_ms=elapsed * 1000)


class OcrBackend:
    """The domain of one OCR service process: its engine, worker pool, limits and models."""

    def __init__(
        self,
        cfg: GatewayConfig,
        backend: BackendConfig,
        engine: OcrEngine,
        pool: WorkerPool,
        identification: LanguageIdentification,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.engine = engine
        self.pool = pool
        self.identification = identification
        self.limits = DocumentLimits(backend.max_document_bytes, backend.max_pages, backend.max_pixels)
        self.in_flight = 0
        self._lifecycle = asyncio.Lock()
        self._health_hooks: list[HealthHook] = []
        self._changed = asyncio.Event()
        engine.on_change(self._changed.set)

    def on_health(self, hook: HealthHook) -> None:
        """Calls `hook(serving)` whenever the engine becomes ready or stops being so."""
        self._health_hooks.append(hook)

    async def _notify(self) -> None:
        serving = self.engine.health().state == EngineState.READY
        for hook in self._health_hooks:
            await hook(serving)

    async def watch(self) -> None:
        """Tells the health hooks when readiness changes by itself (a model server crashing, then recovering)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._notify()

    def status(self) -> BackendView:
        health = self.engine.health()
        return BackendView(
            backend=self.backend.name,
            engine=self.engine.name,
            state=health.state,
            loaded_models=(health.model,) if health.model and health.state == EngineState.READY else (),
            available_models=self.backend.models,
            in_flight=self.in_flight,
            capacity=self.backend.capacity,
            detail=health.detail,
            restarts=health.restarts,
            languages=tuple(sorted(self.engine.languages())) if health.state == EngineState.READY else (),
        )

    def _known_model(self, model: str) -> str:
        if model not in self.backend.models:
            known = ", ".join(self.backend.models) or "none"
            raise NotFound(f"model {model!r} is not served by backend {self.backend.name} (it serves: {known})")
        return model

    async def load(self, model: str = "") -> LifecycleOutcome:
        """Loads `model` (default: the initial or first configured one), replacing whatever is loaded."""
        started = time.perf_counter()
        name = self._known_model(model or self.backend.initial_model or (self.backend.models or ("",))[0])
        async with self._lifecycle:
            current = self.engine.health()
            if current.state == EngineState.READY and current.model == name:
                outcome = f"{name} is already loaded"
            else:
                if current.model:
                    await self.engine.unload()
                try:
                    outcome = await self.engine.load(name, self.cfg.model(name))
                finally:
                    await self._notify()
        return LifecycleOutcome(self.status(), outcome, (time.perf_counter() - started) * 1000)

    async def unload(self, model: str = "") -> LifecycleOutcome:
        """Unloads `model` (or whatever is loaded, when empty)."""
        started = time.perf_counter()
        async with self._lifecycle:
            current = self.engine.health().model
            if model and model != current:
                self._known_model(model)
                outcome = f"{model} is not loaded"
            else:
                outcome = await self.engine.unload()
                await self._notify()
        return LifecycleOutcome(self.status(), outcome, (time.perf_counter() - started) * 1000)

    async def switch(self, model: str) -> LifecycleOutcome:
        """Replaces whatever is loaded with `model` (an OCR engine holds one model)."""
        if not model:
            raise InvalidArgument("model: required", field="model")
        done = await self.load(model)
        return dataclasses.replace(done, outcome=f"switched: {done.outcome}")

    async def sleep(self, level: int) -> LifecycleOutcome:
        """OCR engines have no sleep mode: always FAILED_PRECONDITION."""
        raise FailedPrecondition(self._no_sleep())

    async def wake(self) -> LifecycleOutcome:
        """OCR engines have no sleep mode: always FAILED_PRECONDITION."""
        raise FailedPrecondition(self._no_sleep())

    def _no_sleep(self) -> str:
        return (
            f"backend {self.backend.name} has no sleep mode (OCR engine {self.engine.name} does not sleep; "
            "sleep mode needs a textgen backend with engine vllm and sleep_mode: true)"
        )

    def _serving_model(self, requested: str) -> str:
        health = self.engine.health()
        if requested:
            self._known_model(requested)
        if health.state != EngineState.READY:
            raise Unavailable(f"backend {self.backend.name} has no model loaded ({health.state.value}); load one first")
        if requested and requested != health.model:
            raise Unavailable(f"model {requested!r} is not loaded on backend {self.backend.name} (loaded: {health.model})")
        return health.model

    def _options(self, request: OcrRequest, model: str) -> RecognizeOptions:
        settings = self.cfg.model(model)
        known = self.engine.languages()
        unknown = unknown_languages(request.languages, known)
        if unknown:
            raise InvalidArgument(
                f"language {', '.join(unknown)} is not installed; installed: {', '.join(sorted(known))}",
                field="job.languages",
            )
        candidates = frozenset(settings.languages) & known if settings.languages else known
        mode: Mode = request.mode or parse_mode(settings.default_resolution)
        return RecognizeOptions(mode, request.languages, request.output_format, request.include_layout, candidates)

    @asynccontextmanager
    async def run(self, request: OcrRequest) -> AsyncIterator[DocumentRun]:
        """Validates the request and opens its document; every bad input fails here, before any page is sent."""
        model = self._serving_model(request.model)
        options = self._options(request, model)
        self.in_flight += 1
        try:
            document = await self.pool.run(open_document, request.document, self.limits)
            try:
                pages = page_range(document.page_count, request.first_page, request.last_page)
                yield DocumentRun(self, document, pages, options, model)
            finally:
                await self.pool.run(document.close)
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        """Stops the engine and the workers."""
        await self.engine.close()
        self.pool.close()
