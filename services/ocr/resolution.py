"""Resolution modes (tiny, small, base, large, gundam) and what each means to each engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aigw_common.errors import InvalidArgument


class Mode(StrEnum):
    """A resolution mode, named as DeepSeek-OCR names them."""

    TINY = "tiny"
    SMALL = "small"
    BASE = "base"
    LARGE = "large"
    GUNDAM = "gundam"


@dataclass(frozen=True)
class RenderSpec:
    """How a page becomes pixels: PDF pages are rendered at `dpi`; any page is then held within `max_long_side`."""

    dpi: float
    max_long_side: int
    grayscale: bool = False


@dataclass(frozen=True)
class VisionView:
    """DeepSeek-OCR's vision input: a global view of `base_size`², and `image_size`² crops when `crop_mode` tiles."""

    base_size: int
    image_size: int
    crop_mode: bool


# DeepSeek-OCR's native modes (its config.py): Tiny 512/512, Small 640/640, Base 1024/1024,
# Large 1280/1280 without crops; Gundam a 1024 global view plus 640x640 crops.
DEEPSEEK_VIEWS: dict[Mode, VisionView] = {
    Mode.TINY: VisionView(512, 512, False),
    Mode.SMALL: VisionView(640, 640, False),
    Mode.BASE: VisionView(1024, 1024, False),
    Mode.LARGE: VisionView(1280, 1280, False),
    Mode.GUNDAM: VisionView(1024, 640, True),
}

# Gundam tiles up to 6 crops of 640 (2x3): a page is sent at most 3 crops long.
GUNDAM_MAX_LONG_SIDE = 1920
DEEPSEEK_RENDER_DPI = 144.0

# Tesseract reads best at 200-300 DPI; the mode trades speed for detail.
TESSERACT_RENDER: dict[Mode, RenderSpec] = {
    Mode.TINY: RenderSpec(100, 1280, grayscale=True),
    Mode.SMALL: RenderSpec(150, 1920, grayscale=True),
    Mode.BASE: RenderSpec(200, 2560, grayscale=True),
    Mode.LARGE: RenderSpec(300, 3840, grayscale=True),
    Mode.GUNDAM: RenderSpec(400, 5120, grayscale=True),
}


def deepseek_render(mode: Mode) -> RenderSpec:
    """What DeepSeek-OCR is sent for a mode: the view's size, or Gundam's tiled page."""
    view = DEEPSEEK_VIEWS[mode]
    if view.crop_mode:
        return RenderSpec(DEEPSEEK_RENDER_DPI, GUNDAM_MAX_LONG_SIDE)
    return RenderSpec(DEEPSEEK_RENDER_DPI, view.base_size)


def parse_mode(name: str) -> Mode:
    """A mode from its name (as configured under models.<name>.default_resolution)."""
    try:
        return Mode(name.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in Mode)
        raise InvalidArgument(f"unknown resolution {name!r}; use one of {choices}", field="resolution") from None
