"""A document's real type from its magic numbers, shared by the router (refuse early) and the OCR service."""

from __future__ import annotations

from aigw_server.runtime.errors import InvalidArgument

SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF or PDF"
BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_OTHER_MAGIC = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 codestream"),
    (b"8BPS", "a Photoshop document"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
)


def _describe_text(head: bytes) -> str | None:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG image"
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        return "an HTML page"
    if text.startswith(b"<"):
        return "an XML or HTML document"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in "\r\n\t" for ch in decoded[:256]):
        return "plain text"
    return None


def _describe_other(data: bytes) -> str:
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "a HEIF/AVIF image" if brand in (b"heic", b"heix", b"mif1", b"avif") else "an MP4/QuickTime file"
    return _describe_text(data[:1024]) or "unrecognised binary data"


def sniff(data: bytes, field: str) -> str:
    """The document's real type from its magic numbers: pdf, png, jpeg, webp, bmp or tiff; else INVALID_ARGUMENT."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 18 and int.from_bytes(data[14:18], "little") in BMP_HEADER_SIZES:
        return "bmp"
    raise InvalidArgument(f"unsupported document type: the bytes are {_describe_other(data)}; send {SUPPORTED}", field=field)
