"""Runs the ocr service: `python -m aigw_server.ocr`."""

from aigw_server.ocr.service import build
from aigw_server.runtime.server import serve

if __name__ == "__main__":
    serve("ocr", build)
