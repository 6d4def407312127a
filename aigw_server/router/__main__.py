"""Runs the router service: `python -m aigw_server.router`."""

from aigw_server.router.service import build
from aigw_server.runtime.server import serve

if __name__ == "__main__":
    serve("router", build)
