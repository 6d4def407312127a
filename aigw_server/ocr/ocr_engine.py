"""The one interface every OCR engine (Tesseract, DeepSeek-OCR) implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from aigw_server.ocr.resolution import Mode, RenderSpec
from aigw_server.ocr.results import PageImage, Recognition, RecognizeOptions
from aigw_server.runtime.config import ModelConfig


class EngineState(StrEnum):
    """Lifecycle of an engine, as reported for routing."""

    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    CRASHED = "crashed"


@dataclass(frozen=True)
class EngineHealth:
    """An engine's state, what it holds, and how often its process had to be restarted."""

    state: EngineState
    model: str = ""
    detail: str = ""
    restarts: int = 0


class OcrEngine(Protocol):
    """Recognises page images; loads and unloads its model."""

    @property
    def name(self) -> str:
        """The engine's name as reported: "tesseract" or "deepseek-ocr"."""

    @property
    def concurrency(self) -> int:
        """How many pages of one document it usefully takes at once."""

    def render_spec(self, mode: Mode) -> RenderSpec:
        """How pages are turned into pixels for this engine in `mode`."""

    def languages(self) -> frozenset[str]:
        """Tesseract language codes a request may name."""

    async def load(self, name: str, model: ModelConfig) -> str:
        """Makes the model servable; returns what happened, in words."""

    async def unload(self) -> str:
        """Stops serving the model; returns what happened, in words."""

    def health(self) -> EngineHealth:
        """The engine's state now."""

    def on_change(self, callback: Callable[[], None]) -> None:
        """Calls `callback` (on the event loop) whenever its health changes by itself, e.g. its server crashed."""

    async def recognize(self, page: PageImage, options: RecognizeOptions) -> Recognition:
        """Text, language and layout of one page image."""

    async def close(self) -> None:
        """Releases processes and clients."""


def unknown_languages(requested: Sequence[str], known: frozenset[str]) -> list[str]:
    """The requested codes that are not in `known`, in request order."""
    return [code for code in requested if code not in known]
