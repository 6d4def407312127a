"""Resolution modes (tiny, small, base, large, gundam) and what each means to each engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aigw.common.v1 import common_pb2
from aigw_server.runtime.enums import RESOLUTION_WORDS, RESOLUTIONS
from aigw_server.runtime.errors import InvalidArgument


class Mode(StrEnum):
    """A resolution mode, named as DeepSeek-OCR names them; its value is the API's word for the proto's `Resolution`."""

    TINY = RESOLUTION_WORDS[common_pb2.RESOLUTION_TINY]
    SMALL = RESOLUTION_WORDS[common_pb2.RESOLUTION_SMALL]
    BASE = RESOLUTION_WORDS[common_pb2.RESOLUTION_BASE]
    LARGE = RESOLUTION_WORDS[common_pb2.RESOLUTION_LARGE]
    GUNDAM = RESOLUTION_WORDS[common_pb2.RESOLUTION_GUNDAM]


@dataclass(frozen=True)
class RenderSpec:
    """How a page becomes pixels: PDF pages are rendered at `dpi`; any page is then held within `max_long_side`."""

    dpi: float
    max_long_side: int
    grayscale: bool = False


@dataclass(frozen=True)
class VisionView:
    """How DeepSeek-OCR sees an image: a global view padded to `base_size`², plus `image_size`² crops
    (2 to 6, chosen by aspect ratio) when `crop_mode` is on and a side exceeds `image_size`."""

    base_size: int
    image_size: int
    crop_mode: bool


# vLLM's DeepSeek-OCR processor fixes the view at server start (BASE_SIZE 1024, IMAGE_SIZE 640,
# CROP_MODE on); no request field changes it. DeepSeek's own tiny/small/base/large views (512,
# 640, 1024, 1280 without crops) therefore do not exist on vLLM, and a mode can only choose the
# size of the page image sent: within one crop, the global view alone (273 vision tokens); larger,
# tiled (483 to 933 tokens by page shape). docs/ocr.md has the table, checked against vLLM's code.
VLLM_DEEPSEEK_VIEW = VisionView(1024, 640, True)

# Tiny and small: the page within one crop. Base, large and gundam: tiled, up to 3 crops long (vLLM
# resizes a page to its crop grid, so sending more would buy nothing and less would be upscaled).
DEEPSEEK_LONG_SIDE: dict[Mode, int] = {
    Mode.TINY: VLLM_DEEPSEEK_VIEW.image_size,
    Mode.SMALL: VLLM_DEEPSEEK_VIEW.image_size,
    Mode.BASE: 3 * VLLM_DEEPSEEK_VIEW.image_size,
    Mode.LARGE: 3 * VLLM_DEEPSEEK_VIEW.image_size,
    Mode.GUNDAM: 3 * VLLM_DEEPSEEK_VIEW.image_size,
}
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
    """What DeepSeek-OCR on vLLM is sent for a mode: a page within one crop, or a tiled page."""
    return RenderSpec(DEEPSEEK_RENDER_DPI, DEEPSEEK_LONG_SIDE[mode])


def mode_of(resolution: common_pb2.Resolution.ValueType) -> Mode | None:
    """The mode a request's `Resolution` names; None for RESOLUTION_UNSPECIFIED (the model's default applies)."""
    word = RESOLUTION_WORDS.get(resolution)
    return Mode(word) if word is not None else None


def parse_mode(name: str) -> Mode:
    """A mode from its name (as configured under models.<name>.default_resolution)."""
    try:
        return Mode(name.strip().lower())
    except ValueError:
        choices = ", ".join(RESOLUTIONS)
        raise InvalidArgument(f"unknown resolution {name!r}; use one of {choices}", field="resolution") from None
