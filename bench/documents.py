"""Generated documents for benchmarks: text pages rendered with the DejaVu fonts."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
LINES = [
    "Invoice 2024-{n:04d} for services rendered in March.",
    "The quick brown fox jumps over the lazy dog {n} times.",
    "Total amount due: {n}.00 EUR, payable within 30 days.",
    "Thank you for choosing the aigw document pipeline.",
]


def page_png(n: int, width: int = 1240, height: int = 400) -> bytes:
    """A PNG page of four printed lines (numbered by `n` so pages differ)."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 32)
    for i, line in enumerate(LINES):
        draw.text((40, 40 + i * 80), line.format(n=n), fill=0, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
