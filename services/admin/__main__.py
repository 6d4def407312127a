"""Runs the admin service: `python -m services.admin`."""

from aigw_common.server import serve
from services.admin.service import build

if __name__ == "__main__":
    serve("admin", build)
