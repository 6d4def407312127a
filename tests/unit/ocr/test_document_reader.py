"""Documents: type sniffing, every kind of bad input, limits, text layers, page images and render scales."""

from __future__ import annotations

import pytest
from PIL import Image

from aigw_server.ocr.document_reader import DocumentLimits, fit, normalise, open_document, page_range, sniff
from aigw_server.ocr.resolution import TESSERACT_RENDER, Mode, RenderSpec
from aigw_server.runtime.errors import InvalidArgument
from tests.unit.ocr import samples

LIMITS = DocumentLimits(max_bytes=10 * 2**20, max_pages=20, max_pixels=100_000_000)
PAGE = samples.text_image(samples.ENGLISH[:1], size=24, width=700)


def rejected(data: bytes, limits: DocumentLimits = LIMITS) -> str:
    with pytest.raises(InvalidArgument) as caught:
        open_document(data, limits)
    assert caught.value.field == "job.document"
    return caught.value.message


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_images_are_known_by_their_bytes(fmt: str, kind: str) -> None:
    data = samples.encode(PAGE, fmt)
    assert sniff(data) == kind
    document = open_document(data, LIMITS)
    assert (document.kind, document.page_count) == (kind, 1)
    assert document.page_image(1, TESSERACT_RENDER[Mode.BASE]).image.size == PAGE.size


def test_pdf_is_known_by_its_bytes() -> None:
    document = open_document(samples.text_pdf([samples.ENGLISH, samples.GERMAN]), LIMITS)
    assert (document.kind, document.page_count) == ("pdf", 2)


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200), "a Windows executable"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "an ELF executable"),
        (b"<!DOCTYPE html><html><body><img src=x></body></html>", "an HTML page"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><text>hi</text></svg>', "an SVG image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "an SVG image"),
        (samples.encode(PAGE, "GIF"), "a GIF image"),
        (b"PK\x03\x04" + bytes(100), "a ZIP archive"),
        (b"just some words that someone named scan.png\n", "plain text"),
        (bytes(range(7, 256)) * 4, "unrecognised binary data"),
    ],
)
def test_disguised_and_unsupported_types_are_named(data: bytes, looks_like: str) -> None:
    message = rejected(data)
    assert f"the bytes are {looks_like}" in message
    assert "JPEG, PNG, WebP, BMP, TIFF or PDF" in message


def test_empty_document() -> None:
    assert rejected(b"") == "the document is empty"


def test_oversize_document_is_refused_before_anything_is_read() -> None:
    small = DocumentLimits(max_bytes=1000, max_pages=20, max_pixels=10**8)
    assert "accepts at most 1,000" in rejected(samples.encode(PAGE), small)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_truncated_image(fmt: str) -> None:
    data = samples.encode(samples.text_image(samples.ENGLISH), fmt)
    message = rejected(data[: len(data) // 2])
    assert f"the {fmt.replace('WEBP', 'WebP')}" in message.replace("WEBP", "WebP")
    assert "corrupt" in message


def test_corrupt_png_after_a_valid_signature() -> None:
    assert "corrupt" in rejected(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def test_decompression_bomb_is_refused_without_decoding() -> None:
    bomb = samples.png_bomb(15_000, 15_000)
    assert len(bomb) < 200_000
    assert "decompression bomb" in rejected(bomb)


def test_pdf_image_declaring_too_many_pixels_is_refused_before_decoding() -> None:
    document = open_document(samples.pdf_image_bomb(50_000, 50_000), LIMITS)
    for read in (lambda: document.text_layer(1, layout=False), lambda: document.page_image(1, TESSERACT_RENDER[Mode.BASE])):
        with pytest.raises(InvalidArgument) as caught:
            read()
        assert "page 1 of the PDF holds an image of 50000x50000 = 2,500,000,000 pixels" in caught.value.message


def test_pixel_limit_is_the_backends_own() -> None:
    tight = DocumentLimits(max_bytes=10 * 2**20, max_pages=20, max_pixels=50_000)
    message = rejected(samples.encode(PAGE), tight)
    assert "over this backend's limit of 50,000" in message


def test_corrupt_pdf() -> None:
    assert rejected(b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n") == "the PDF is corrupt and cannot be read"


def test_truncated_pdf() -> None:
    data = samples.text_pdf([samples.ENGLISH] * 3)
    assert "truncated" in rejected(data[: len(data) // 2])


def test_encrypted_pdf() -> None:
    assert "encrypted" in rejected(samples.encrypted_pdf(samples.ENGLISH))


def test_pdf_with_only_an_owner_password_is_readable() -> None:
    layer = open_document(samples.owner_locked_pdf(samples.ENGLISH), LIMITS).text_layer(1, layout=False)
    assert layer is not None
    assert samples.ENGLISH[0] in layer.text


def test_absurd_page_counts() -> None:
    few = DocumentLimits(max_bytes=10 * 2**20, max_pages=3, max_pixels=10**8)
    assert "the PDF has 4 pages; this backend accepts at most 3" in rejected(samples.blank_pdf(4), few)
    assert "the TIFF has 4 pages" in rejected(samples.tiff_pages([PAGE] * 4), few)


def test_multi_frame_tiff_has_a_page_per_frame() -> None:
    frames = [samples.text_image([line], width=900) for line in samples.ENGLISH]
    document = open_document(samples.tiff_pages(frames), LIMITS)
    assert document.page_count == 3
    for number, frame in enumerate(frames, 1):
        image = document.page_image(number, TESSERACT_RENDER[Mode.BASE]).image
        assert list(image.getdata()) == list(frame.getdata())


@pytest.mark.parametrize(
    ("count", "first", "last", "pages"),
    [(5, 0, 0, [1, 2, 3, 4, 5]), (5, 2, 3, [2, 3]), (5, 4, 0, [4, 5]), (5, 0, 2, [1, 2]), (5, 3, 9, [3, 4, 5])],
)
def test_page_ranges(count: int, first: int, last: int, pages: list[int]) -> None:
    assert list(page_range(count, first, last)) == pages


@pytest.mark.parametrize(
    ("first", "last", "problem"),
    [(6, 0, "past the document's last page (5)"), (4, 2, "before first_page 4"), (-1, 0, "1-based")],
)
def test_bad_page_ranges(first: int, last: int, problem: str) -> None:
    with pytest.raises(InvalidArgument, match="page") as caught:
        page_range(5, first, last)
    assert problem in caught.value.message


def test_text_layer_is_used_where_it_is_usable() -> None:
    data = samples.mixed_pdf([samples.ENGLISH], [samples.text_image(samples.FRENCH)])
    document = open_document(data, LIMITS)
    layer = document.text_layer(1, layout=True)
    assert layer is not None
    assert layer.text.splitlines() == samples.ENGLISH
    assert [line.text for line in layer.lines] == samples.ENGLISH
    assert all(line.box.width > 0 and line.box.height > 0 for line in layer.lines)
    assert document.text_layer(2, layout=False) is None


def test_scan_with_stray_text_is_recognised_not_read() -> None:
    data = samples.scanned_pdf([samples.text_image(samples.ENGLISH)], stray_text="Scanned by the copier, page 1")
    assert open_document(data, LIMITS).text_layer(1, layout=False) is None


@pytest.mark.parametrize(("mode", "dpi"), [(Mode.TINY, 100), (Mode.BASE, 200), (Mode.LARGE, 300)])
def test_pdf_pages_render_at_the_modes_scale(mode: Mode, dpi: int) -> None:
    document = open_document(samples.blank_pdf(1), LIMITS)
    page = document.page_image(1, TESSERACT_RENDER[mode])
    width, height = page.image.size
    assert width == height == pytest.approx(200 * dpi / 72, abs=1)
    assert page.dpi == pytest.approx(dpi)
    assert page.image.mode == "L"


def test_render_scale_is_capped_by_long_side_and_pixels() -> None:
    document = open_document(samples.blank_pdf(1), DocumentLimits(10**7, 5, max_pixels=250_000))
    assert max(document.page_image(1, RenderSpec(300, 400)).image.size) == 400
    assert document.page_image(1, RenderSpec(600, 10_000)).image.size == (500, 500)


def test_fit_scales_down_only() -> None:
    image = Image.new("L", (4000, 1000), 255)
    assert fit(image, 2000, 10**9)[0].size == (2000, 500)
    assert fit(image, 8000, 10**9) == (image, 1.0)


def test_transparent_images_are_laid_over_white() -> None:
    rgba = Image.new("RGBA", (50, 20), (0, 0, 0, 0))
    rgba.putpixel((5, 5), (0, 0, 0, 255))
    gray = normalise(rgba, grayscale=True)
    pixels = gray.tobytes()
    assert (gray.mode, pixels[0], pixels[5 * 50 + 5]) == ("L", 255, 0)


def test_sixteen_bit_scans_keep_their_contrast() -> None:
    deep = Image.new("I;16", (20, 20), 60000)
    deep.putpixel((3, 3), 1000)
    gray = normalise(deep, grayscale=True)
    pixels = gray.tobytes()
    assert pixels[0] > 200
    assert pixels[3 * 20 + 3] < 20
