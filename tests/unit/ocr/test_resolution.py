"""Resolution modes: what DeepSeek-OCR on vLLM is really sent, and Tesseract's rendering scales."""

from __future__ import annotations

import pytest

from aigw_server.ocr.resolution import TESSERACT_RENDER, VLLM_DEEPSEEK_VIEW, Mode, VisionView, deepseek_render, parse_mode
from aigw_server.runtime.errors import InvalidArgument


def test_deepseek_modes_are_what_vllm_can_do() -> None:
    """vLLM fixes a 1024 global view with 640 crops; no request chooses DeepSeek's own 512/640/1024/1280 views."""
    assert VisionView(1024, 640, crop_mode=True) == VLLM_DEEPSEEK_VIEW
    sides = {m: deepseek_render(m).max_long_side for m in Mode}

    untiled = [m for m in Mode if sides[m] <= VLLM_DEEPSEEK_VIEW.image_size]
    assert untiled == [Mode.TINY, Mode.SMALL], "the global view alone: the cheapest vLLM can do"
    assert {sides[m] for m in Mode if m not in untiled} == {1920}, "tiled up to 3 crops long, never upscaled"


def test_tesseract_modes_trade_speed_for_detail() -> None:
    dpis = [TESSERACT_RENDER[m].dpi for m in Mode]
    assert dpis == sorted(dpis)
    assert TESSERACT_RENDER[Mode.BASE].dpi == 200
    assert all(spec.grayscale for spec in TESSERACT_RENDER.values())


def test_modes_by_name() -> None:
    assert parse_mode(" Gundam ") is Mode.GUNDAM
    with pytest.raises(InvalidArgument, match="tiny, small, base, large, gundam"):
        parse_mode("huge")
