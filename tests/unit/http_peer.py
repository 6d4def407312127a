"""A real local HTTP/1.1 server that answers with an httpx-style handler (request in, response out).

Model-server stand-ins are written as such handlers; serving them over a real socket tests the gateway's own
HTTP client end to end. A handler that raises an `httpx.HTTPError` (a refused or late server) makes the server
drop the connection without an answer, which the client sees as a failed request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

Handler = Callable[[httpx.Request], httpx.Response]
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class HttpPeer:
    """Serves `handler` on 127.0.0.1 (keep-alive) until `close()`; `close_all()` ends every peer still running."""

    running: ClassVar[set[HttpPeer]] = set()

    def __init__(self, handler: Handler) -> None:
        self.connections = 0
        peer = self

        class Serve(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                peer.connections += 1

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = httpx.Request(
                    self.command, f"http://127.0.0.1{self.path}", headers=list(self.headers.items()), content=body
                )
                try:
                    response = handler(request)
                except httpx.HTTPError:
                    self.close_connection = True
                    return
                content = response.content
                self.send_response(response.status_code)
                for name, value in response.headers.multi_items():
                    if name.lower() not in _FRAMING:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-peer", daemon=True)
        self._thread.start()
        HttpPeer.running.add(self)

    def close(self) -> None:
        HttpPeer.running.discard(self)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @classmethod
    def close_all(cls) -> None:
        for peer in list(cls.running):
            peer.close()


@pytest.fixture(autouse=True)
def close_http_peers() -> Iterator[None]:
    """Ends the peers a test started (import it into a test package's conftest)."""
    yield
    HttpPeer.close_all()
