"""Runs the textgen service: `python -m aigw_server.textgen`."""

from aigw_server.runtime.server import serve
from aigw_server.textgen.service import build

if __name__ == "__main__":
    serve("textgen", build)
