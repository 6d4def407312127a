"""Runs the ocr service: `python -m services.ocr`."""

from aigw_common.server import serve
from services.ocr.service import build

if __name__ == "__main__":
    serve("ocr", build)
