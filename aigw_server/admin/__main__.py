"""Runs the admin service: `python -m aigw_server.admin`."""

from aigw_server.admin.service import build
from aigw_server.runtime.server import serve

if __name__ == "__main__":
    serve("admin", build)
