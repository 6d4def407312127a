"""Runs the textgen service: `python -m services.textgen`."""

from aigw_common.server import serve
from services.textgen.service import build

if __name__ == "__main__":
    serve("textgen", build)
