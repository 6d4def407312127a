"""Runs the queue service: `python -m services.queue`."""

from aigw_common.server import serve
from services.queue.service import build

if __name__ == "__main__":
    serve("queue", build)
