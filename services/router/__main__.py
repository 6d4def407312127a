"""Runs the router service: `python -m services.router`."""

from aigw_common.server import serve
from services.router.service import build

if __name__ == "__main__":
    serve("router", build)
