"""Resolution modes: DeepSeek-OCR's native views and Tesseract's rendering scales."""

from __future__ import annotations

import pytest

from aigw_common.errors import InvalidArgument
from services.ocr.resolution import DEEPSEEK_VIEWS, TESSERACT_RENDER, Mode, VisionView, deepseek_render, parse_mode


def test_deepseek_modes_have_their_real_meanings() -> None:
    assert {
        Mode.TINY: VisionView(512, 512, crop_mode=False),
        Mode.SMALL: VisionView(640, 640, crop_mode=False),
        Mode.BASE: VisionView(1024, 1024, crop_mode=False),
        Mode.LARGE: VisionView(1280, 1280, crop_mode=False),
        Mode.GUNDAM: VisionView(1024, 640, crop_mode=True),
    } == DEEPSEEK_VIEWS


def test_deepseek_gets_the_views_size_or_gundams_tiled_page() -> None:
    assert [deepseek_render(m).max_long_side for m in Mode] == [512, 640, 1024, 1280, 1920]


def test_tesseract_modes_trade_speed_for_detail() -> None:
    dpis = [TESSERACT_RENDER[m].dpi for m in Mode]
    assert dpis == sorted(dpis)
    assert TESSERACT_RENDER[Mode.BASE].dpi == 200
    assert all(spec.grayscale for spec in TESSERACT_RENDER.values())


def test_modes_by_name() -> None:
    assert parse_mode(" Gundam ") is Mode.GUNDAM
    with pytest.raises(InvalidArgument, match="tiny, small, base, large, gundam"):
        parse_mode("huge")
