"""A tiny OpenAI-compatible server process for supervision tests: `python standin_server.py PORT FAIL_FILE`.

It exits with code 3 at start while FAIL_FILE exists, and otherwise answers /v1/models and chat completions.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ANSWER = {
    "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"completion_tokens": 1},
}


class Handler(BaseHTTPRequestHandler):
    """GET /v1/models and POST /v1/chat/completions."""

    def _send(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "standin"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._send(ANSWER)

    def log_message(self, format: str, *args: object) -> None:
        return None


if __name__ == "__main__":
    port, fail_file = int(sys.argv[1]), Path(sys.argv[2])
    if fail_file.exists():
        sys.stderr.write(f"standin: refusing to start while {fail_file.name} exists\n")
        sys.exit(3)
    sys.stderr.write(f"standin: serving on {port}\n")
    sys.stderr.flush()
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
