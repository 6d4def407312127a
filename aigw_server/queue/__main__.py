"""Runs the queue service: `python -m aigw_server.queue`."""

from aigw_server.queue.service import build
from aigw_server.runtime.server import serve

if __name__ == "__main__":
    serve("queue", build)
