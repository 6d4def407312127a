"""An upload opened as pages: its sniffed type, limits enforced, PDF text layers and page images on demand."""

from __future__ import annotations

import functools
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from aigw_server.ocr.languages import letter_count
from aigw_server.ocr.resolution import RenderSpec
from aigw_server.ocr.results import Box, Line, PageImage, Word
from aigw_server.runtime.document_types import sniff as sniff_type
from aigw_server.runtime.errors import InvalidArgument

if TYPE_CHECKING:
    import pymupdf

FIELD = "job.document"

# MuPDF keeps global state and is not thread-safe (PyMuPDF's docs say so): every call into it takes this lock.
_MUPDF = threading.Lock()


@functools.cache
def _mupdf() -> Any:  # Any: a module imported on first use has no static type to name here
    """PyMuPDF, imported with the first PDF: it costs ~120 MB resident that an idle service need not hold."""
    import pymupdf

    # Its messages about damaged files go to stderr by default; the errors raised here say what matters.
    # (`TOOLS`' methods carry no annotations, hence the ignores.)
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    return pymupdf


_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
# Text layers with fewer letters than this are page furniture (a folio, a stamp), not the page's text.
MIN_TEXT_LAYER_LETTERS = 16
# A page mostly covered by images is a scan unless its text layer is substantial.
SCAN_IMAGE_COVER = 0.5
SCAN_TEXT_LETTERS = 200


@dataclass(frozen=True)
class DocumentLimits:
    """What one backend accepts."""

    max_bytes: int
    max_pages: int
    max_pixels: int


@dataclass(frozen=True)
class TextLayer:
    """A PDF page's own text; layout boxes are in PDF points (the page at 72 DPI)."""

    text: str
    lines: tuple[Line, ...] = ()


def sniff(data: bytes) -> str:
    """The document's real type from its magic numbers: pdf, png, jpeg, webp, bmp or tiff."""
    return sniff_type(data, FIELD)


def page_range(page_count: int, first: int, last: int) -> range:
    """Pages first..last (1-based, inclusive; 0 means the document's first or last page)."""
    if first < 0 or last < 0:
        raise InvalidArgument("first_page and last_page are 1-based page numbers (0 means unset)", field="job.first_page")
    start = first or 1
    end = last or page_count
    if start > page_count:
        raise InvalidArgument(f"first_page {start} is past the document's last page ({page_count})", field="job.first_page")
    if end < start:
        raise InvalidArgument(f"last_page {end} is before first_page {start}", field="job.last_page")
    return range(start, min(end, page_count) + 1)


def _too_many_pixels(width: int, height: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"the image is {width}x{height} = {width * height:,} pixels, over this backend's limit of {limit:,}"
        " (decompression bomb protection)",
        field=FIELD,
    )


def fit(image: Image.Image, max_long_side: int, max_pixels: int) -> tuple[Image.Image, float]:
    """The image scaled down (never up) to fit both limits, and the factor applied."""
    w, h = image.size
    factor = min(1.0, max_long_side / max(w, h), (max_pixels / (w * h)) ** 0.5)
    if factor >= 1.0:
        return image, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0), factor


def normalise(image: Image.Image, grayscale: bool) -> Image.Image:
    """8-bit gray or RGB pixels; transparency laid over white, 16-bit and float samples scaled into 8 bits."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode in ("I", "F"):
        # Pillow types the extrema of multi-band images too; "I" and "F" images have one band: (low, high).
        high = float(image.getextrema()[1])  # type: ignore[arg-type]
        scale = 255 / high if high > 255 else 1.0
        image = image.point(lambda v: v * scale).convert("L")
    if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    target = "L" if grayscale else "RGB"
    return image if image.mode == target else image.convert(target)


class Document(ABC):
    """A validated document: its type, page count, text layers and page images (thread-safe)."""

    kind: str
    page_count: int

    @abstractmethod
    def text_layer(self, number: int, layout: bool) -> TextLayer | None:
        """The page's usable text layer, or None when it must be recognised."""

    @abstractmethod
    def page_image(self, number: int, spec: RenderSpec) -> PageImage:
        """The page as pixels, rendered or scaled as `spec` says."""

    @abstractmethod
    def close(self) -> None:
        """Frees what the document holds."""


class ImageDocument(Document):
    """A JPEG, PNG, WebP, BMP or TIFF (a multi-frame TIFF has a page per frame); every frame is decoded once up front."""

    def __init__(self, data: bytes, kind: str, limits: DocumentLimits) -> None:
        self.kind = kind
        self.limits = limits
        self._lock = threading.Lock()
        self._image = self._open(data)
        frames = getattr(self._image, "n_frames", 1) if kind == "tiff" else 1
        if frames > limits.max_pages:
            raise InvalidArgument(f"the TIFF has {frames} pages; this backend accepts at most {limits.max_pages}", field=FIELD)
        self.page_count = frames
        for index in range(frames):
            self._frame(index)

    def _open(self, data: bytes) -> Image.Image:
        try:
            return Image.open(BytesIO(data), formats=[_PILLOW_FORMATS[self.kind]])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidArgument(
                f"the image declares more pixels than this backend's limit of {self.limits.max_pixels:,}"
                " (decompression bomb protection)",
                field=FIELD,
            ) from None
        except _PILLOW_ERRORS:
            raise InvalidArgument(f"the {self.kind.upper()} image is corrupt and cannot be read", field=FIELD) from None

    def _frame(self, index: int) -> Image.Image:
        """Frame `index` decoded (caller holds no lock; this takes it)."""
        with self._lock:
            try:
                self._image.seek(index)
                width, height = self._image.size
                if width * height > self.limits.max_pixels:
                    raise _too_many_pixels(width, height, self.limits.max_pixels)
                self._image.load()
                frame = self._image.copy()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _too_many_pixels(*self._image.size, self.limits.max_pixels) from None
            except _PILLOW_ERRORS:
                where = f"page {index + 1} of the TIFF" if self.page_count > 1 else f"the {self.kind.upper()} image"
                raise InvalidArgument(f"{where} is truncated or corrupt and cannot be decoded", field=FIELD) from None
        return frame

    def text_layer(self, number: int, layout: bool) -> TextLayer | None:
        return None

    def page_image(self, number: int, spec: RenderSpec) -> PageImage:
        frame = self._frame(number - 1)
        dpi = _image_dpi(frame)
        frame = ImageOps.exif_transpose(frame) if self.kind in ("jpeg", "webp", "tiff", "png") else frame
        frame = normalise(frame, spec.grayscale)
        frame, factor = fit(frame, spec.max_long_side, self.limits.max_pixels)
        return PageImage(number, frame, dpi * factor if dpi else None)

    def close(self) -> None:
        with self._lock:
            self._image.close()


def _image_dpi(image: Image.Image) -> float | None:
    """The resolution an image declares, when it is plausible for a scan or a photo of a page."""
    dpi = image.info.get("dpi")
    if not isinstance(dpi, tuple) or not dpi:
        return None
    value = float(dpi[0])
    return value if 70 <= value <= 1200 else None


class PdfDocument(Document):
    """A PDF read with PyMuPDF: text layers where usable, pages rendered at the mode's scale otherwise."""

    kind = "pdf"

    def __init__(self, data: bytes, limits: DocumentLimits) -> None:
        self.limits = limits
        if b"%%EOF" not in data[-1024:]:
            raise InvalidArgument("the PDF is truncated (it has no end-of-file marker); send the complete file", field=FIELD)
        with _MUPDF:
            try:
                self._doc = _mupdf().open(stream=data, filetype="pdf")
            except (RuntimeError, ValueError):
                raise InvalidArgument("the PDF is corrupt and cannot be read", field=FIELD) from None
            encrypted = self._doc.needs_pass
            count = self._doc.page_count
        if encrypted:
            self.close()
            raise InvalidArgument("the PDF is encrypted (password-protected); send it decrypted", field=FIELD)
        if count == 0:
            self.close()
            raise InvalidArgument("the PDF has no pages", field=FIELD)
        if count > limits.max_pages:
            self.close()
            raise InvalidArgument(f"the PDF has {count} pages; this backend accepts at most {limits.max_pages}", field=FIELD)
        self.page_count = count

    def _damaged(self, number: int) -> InvalidArgument:
        return InvalidArgument(f"page {number} of the PDF is damaged and cannot be read", field=FIELD)

    def text_layer(self, number: int, layout: bool) -> TextLayer | None:
        with _MUPDF:
            try:
                page = self._doc.load_page(number - 1)
                self._check_images(page, number)
                text = page.get_text("text")
                if not _usable_text(text) or _looks_scanned(page, text):
                    return None
                lines = _layer_lines(page.get_text("words")) if layout else ()
            except (RuntimeError, ValueError):
                raise self._damaged(number) from None
        return TextLayer(text.strip(), lines)

    def _check_images(self, page: pymupdf.Page, number: int) -> None:
        """Refuses a page whose embedded images declare more pixels than allowed, before MuPDF decodes them."""
        for info in page.get_images(full=False):  # type: ignore[no-untyped-call]  # unannotated in PyMuPDF
            width, height = int(info[2]), int(info[3])
            if width * height > self.limits.max_pixels:
                raise InvalidArgument(
                    f"page {number} of the PDF holds an image of {width}x{height} = {width * height:,} pixels, over this"
                    f" backend's limit of {self.limits.max_pixels:,} (decompression bomb protection)",
                    field=FIELD,
                )

    def page_image(self, number: int, spec: RenderSpec) -> PageImage:
        with _MUPDF:
            try:
                page = self._doc.load_page(number - 1)
                self._check_images(page, number)
                scale = self._scale(page.rect, spec)
                mu = _mupdf()
                colorspace = mu.csGRAY if spec.grayscale else mu.csRGB
                matrix = mu.Matrix(scale, scale)
                pix = page.get_pixmap(matrix=matrix, colorspace=colorspace, alpha=False)
                mode = "L" if spec.grayscale else "RGB"
                image = Image.frombytes(mode, (pix.width, pix.height), pix.samples)
            except (RuntimeError, ValueError):
                raise self._damaged(number) from None
        return PageImage(number, image, scale * 72)

    def _scale(self, rect: pymupdf.Rect, spec: RenderSpec) -> float:
        width, height = max(rect.width, 1.0), max(rect.height, 1.0)
        scale = spec.dpi / 72
        scale = min(scale, spec.max_long_side / max(width, height))
        return float(min(scale, (self.limits.max_pixels / (width * height)) ** 0.5))

    def close(self) -> None:
        with _MUPDF:
            self._doc.close()


def _usable_text(text: str) -> bool:
    letters = letter_count(text)
    if letters < MIN_TEXT_LAYER_LETTERS:
        return False
    visible = sum(1 for ch in text if not ch.isspace())
    return text.count("\ufffd") <= 0.05 * visible


def _looks_scanned(page: pymupdf.Page, text: str) -> bool:
    """A page mostly covered by images with little text is a scan with stray text (a stamp, a header)."""
    if letter_count(text) >= SCAN_TEXT_LETTERS:
        return False
    area = abs(page.rect) or 1.0
    covered = sum(abs(_mupdf().Rect(info["bbox"]) & page.rect) for info in page.get_image_info())
    return bool(covered / area >= SCAN_IMAGE_COVER)


def _layer_lines(words: list[tuple[float, float, float, float, str, int, int, int]]) -> tuple[Line, ...]:
    grouped: dict[tuple[int, int], list[Word]] = {}
    for x0, y0, x1, y1, text, block, line, _ in words:
        box = Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0))
        grouped.setdefault((block, line), []).append(Word(text, 100.0, box))
    return tuple(_line_of(ws) for ws in grouped.values())


def _line_of(words: list[Word]) -> Line:
    x = min(w.box.x for w in words)
    y = min(w.box.y for w in words)
    right = max(w.box.x + w.box.width for w in words)
    bottom = max(w.box.y + w.box.height for w in words)
    confidence = sum(w.confidence for w in words) / len(words)
    return Line(" ".join(w.text for w in words), confidence, Box(x, y, right - x, bottom - y), tuple(words))


@dataclass(frozen=True)
class DocumentFacts:
    """What a document is and how many pages it has."""

    kind: str
    page_count: int


def inspect_document(data: bytes, limits: DocumentLimits) -> DocumentFacts:
    """Type and page count, refusing what cannot be recognised before it is queued (blocking: run it off the event loop).

    A PDF is opened (truncated, corrupt, encrypted or without pages is refused); an image's header is read
    (size and frames), its pixels are decoded only when it is recognised.
    """
    if not data:
        raise InvalidArgument("the document is empty", field=FIELD)
    kind = sniff(data)
    if kind == "pdf":
        pdf = PdfDocument(data, limits)
        pdf.close()
        return DocumentFacts(kind, pdf.page_count)
    try:
        with Image.open(BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
            width, height = image.size
            frames = getattr(image, "n_frames", 1) if kind == "tiff" else 1
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArgument(
            f"the image declares more pixels than the limit of {limits.max_pixels:,} (decompression bomb protection)", field=FIELD
        ) from None
    except _PILLOW_ERRORS:
        raise InvalidArgument(f"the {kind.upper()} image is corrupt and cannot be read", field=FIELD) from None
    if width * height > limits.max_pixels:
        raise _too_many_pixels(width, height, limits.max_pixels)
    if frames > limits.max_pages:
        raise InvalidArgument(f"the TIFF has {frames} pages; the limit is {limits.max_pages}", field=FIELD)
    return DocumentFacts(kind, frames)


def open_document(data: bytes, limits: DocumentLimits) -> Document:
    """Checks size and type, opens and validates the document (blocking: run it off the event loop)."""
    if not data:
        raise InvalidArgument("the document is empty", field=FIELD)
    if len(data) > limits.max_bytes:
        raise InvalidArgument(
            f"the document is {len(data):,} bytes; this backend accepts at most {limits.max_bytes:,}",
            field=FIELD,
        )
    kind = sniff(data)
    if kind == "pdf":
        return PdfDocument(data, limits)
    return ImageDocument(data, kind, limits)
