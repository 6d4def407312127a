"""What recognition produces: boxes, words, lines, pages, and the request that asks for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

from aigw_server.ocr.resolution import Mode


class OutputFormat(StrEnum):
    """How recognised text is written."""

    TEXT = "text"
    MARKDOWN = "markdown"


class Source(StrEnum):
    """Where a page's text came from."""

    TEXT_LAYER = "text_layer"
    OCR = "ocr"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in page pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Word:
    """One recognised word with its confidence in [0, 100]."""

    text: str
    confidence: float
    box: Box


@dataclass(frozen=True)
class Line:
    """One line of words; its confidence is the mean of its words'."""

    text: str
    confidence: float
    box: Box
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class PageImage:
    """A page as pixels, ready for an engine; `dpi` when known (rendered PDFs, images that say)."""

    number: int
    image: Image.Image
    dpi: float | None = None


@dataclass(frozen=True)
class Recognition:
    """What an engine made of one page image."""

    text: str
    language: str
    script: str
    confidence: float
    width: int
    height: int
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class PageResult:
    """The answer for one page."""

    page: int
    text: str
    source: Source
    language: str = ""
    script: str = ""
    confidence: float = 0.0
    lines: tuple[Line, ...] = ()
    width: int = 0
    height: int = 0
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class OcrRequest:
    """One document to recognise, with its options (unset options take the model's defaults)."""

    document: bytes
    model: str = ""
    mode: Mode | None = None
    languages: tuple[str, ...] = ()
    first_page: int = 0
    last_page: int = 0
    output_format: OutputFormat = OutputFormat.TEXT
    include_layout: bool = False


@dataclass(frozen=True)
class RecognizeOptions:
    """The options an engine sees for each page of one request."""

    mode: Mode
    languages: tuple[str, ...]
    output_format: OutputFormat
    include_layout: bool
    candidates: frozenset[str] = field(default_factory=frozenset)
