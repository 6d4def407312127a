"""Generated test documents (DejaVu fonts, Pillow, PyMuPDF) and the character error rate used to judge OCR output."""
# ruff: noqa: RUF001  (the Greek and Cyrillic samples are meant to hold letters that look Latin)

from __future__ import annotations

import functools
import struct
import zlib
from io import BytesIO
from typing import Any

import pymupdf
from PIL import Image, ImageDraw, ImageFont

# PyMuPDF's annotations are partial; the builders below use it untyped.
mupdf: Any = pymupdf

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = {
    "sans": "DejaVuSans.ttf",
    "serif": "DejaVuSerif.ttf",
    "mono": "DejaVuSansMono.ttf",
    "condensed-bold": "DejaVuSansCondensed-Bold.ttf",
    "serif-italic": "DejaVuSerif-Italic.ttf",
}

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoice number 2024-0117 is due on 15 March.",
    "Please keep this receipt for your records.",
]
GERMAN = [
    "Der schnelle braune Fuchs springt über den Zaun.",
    "Die Rechnung ist innerhalb von dreißig Tagen fällig.",
    "Bitte bewahren Sie diese Quittung für Ihre Unterlagen auf.",
]
FRENCH = [
    "Le vif renard brun saute par-dessus le chien paresseux.",
    "La facture doit être réglée avant la fin du mois.",
    "Veuillez conserver ce reçu pour vos dossiers.",
]
RUSSIAN = [
    "Съешь же ещё этих мягких французских булок,",
    "да выпей чаю. Счёт необходимо оплатить",
    "в течение тридцати дней после получения.",
]
GREEK = [
    "Η γρήγορη καφέ αλεπού πηδά πάνω από τον σκύλο.",
    "Το τιμολόγιο πρέπει να εξοφληθεί μέσα σε τριάντα ημέρες.",
    "Παρακαλούμε κρατήστε αυτή την απόδειξη.",
]


def font(name: str = "sans", size: int = 28) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(f"{FONT_DIR}/{FONTS[name]}", size)


def text_image(lines: list[str], face: str = "sans", size: int = 28, width: int = 1400, margin: int = 40) -> Image.Image:
    """Black text on white, one line per entry, in grayscale."""
    step = int(size * 1.7)
    image = Image.new("L", (width, 2 * margin + step * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * step), line, font=font(face, size), fill=0)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def tiff_pages(images: list[Image.Image]) -> bytes:
    """A multi-frame TIFF, one frame per image."""
    out = BytesIO()
    images[0].save(out, format="TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")
    return out.getvalue()


def _pdf_bytes(doc: Any) -> bytes:
    data: bytes = doc.tobytes()
    doc.close()
    return data


def text_pdf(pages: list[list[str]], size: float = 12) -> bytes:
    """A PDF whose pages carry a real text layer (DejaVu Sans embedded, so any script works)."""
    doc = mupdf.open()
    for lines in pages:
        page = doc.new_page(width=595, height=300)
        page.insert_font(fontname="dejavu", fontfile=f"{FONT_DIR}/{FONTS['sans']}")
        for i, line in enumerate(lines):
            page.insert_text((40, 60 + i * size * 1.8), line, fontname="dejavu", fontsize=size)
    doc.subset_fonts()
    return _pdf_bytes(doc)


def scanned_pdf(images: list[Image.Image], stray_text: str = "") -> bytes:
    """A PDF of image-only pages (a scan), each image filling a 595pt-wide page; optional short stray text on each."""
    doc = mupdf.open()
    for image in images:
        height = 595 * image.height / image.width
        page = doc.new_page(width=595, height=height)
        page.insert_image(page.rect, stream=encode(image))
        if stray_text:
            page.insert_text((20, 15), stray_text, fontsize=8)
    return _pdf_bytes(doc)


def mixed_pdf(text_pages: list[list[str]], scans: list[Image.Image]) -> bytes:
    """Text-layer pages followed by scanned pages."""
    doc = mupdf.open(stream=text_pdf(text_pages), filetype="pdf")
    doc.insert_pdf(mupdf.open(stream=scanned_pdf(scans), filetype="pdf"))
    return _pdf_bytes(doc)


def encrypted_pdf(lines: list[str]) -> bytes:
    doc = mupdf.open(stream=text_pdf([lines]), filetype="pdf")
    data: bytes = doc.tobytes(encryption=mupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    return data


def owner_locked_pdf(lines: list[str]) -> bytes:
    """Encrypted with only an owner password (permissions): anyone may open and read it."""
    doc = mupdf.open(stream=text_pdf([lines]), filetype="pdf")
    data: bytes = doc.tobytes(encryption=mupdf.PDF_ENCRYPT_AES_256, owner_pw="owner", permissions=0)
    return data


def pdf_image_bomb(width: int, height: int) -> bytes:
    """A one-page PDF whose image declares `width` x `height` pixels (its data stays tiny)."""
    doc = mupdf.open(stream=scanned_pdf([Image.new("L", (8, 8), 255)]), filetype="pdf")
    xref = doc[0].get_images()[0][0]
    doc.xref_set_key(xref, "Width", str(width))
    doc.xref_set_key(xref, "Height", str(height))
    return _pdf_bytes(doc)


def blank_pdf(pages: int) -> bytes:
    doc = mupdf.open()
    for _ in range(pages):
        doc.new_page(width=200, height=200)
    return _pdf_bytes(doc)


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of a huge all-white 1-bit image: tiny on the wire, `width * height` pixels when decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _normalise(text: str) -> str:
    return " ".join(text.split())


def distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(expected: str, actual: str) -> float:
    """Character error rate of `actual` against `expected`, whitespace runs counting as one space."""
    want, got = _normalise(expected), _normalise(actual)
    return distance(want, got) / max(1, len(want))
