"""A stand-in for `vllm serve deepseek-ai/DeepSeek-OCR` (no GPU here): same flags, /health, /v1/models, chat completions.

It refuses to start without the recipe's flags, and answers a chat completion with the prompt it was given and the
size of the image it was sent, so tests can see what crossed the wire.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

from PIL import Image

REQUIRED = ("--logits_processors", "--no-enable-prefix-caching", "--mm-processor-cache-gb")
END = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def answer(body: dict[str, object]) -> dict[str, object]:
    messages = body["messages"]
    assert isinstance(messages, list)
    parts = messages[0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    prompt = next(p["text"] for p in parts if p["type"] == "text")
    image = Image.open(BytesIO(base64.b64decode(url.split(",", 1)[1])))
    content = f"<|ref|>text<|/ref|><|det|>[[0, 0, 999, 499]]<|/det|>\nprompt {prompt!r} image {image.width}x{image.height}"
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content + END}, "finish_reason": "stop"}]}


def handler(served: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def _send(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": served, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions" or body.get("vllm_xargs", {}).get("ngram_size") != 30:
                self._send(400, {"error": {"message": "bad request"}})
                return
            self._send(200, answer(body))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, rest = parser.parse_known_args()
    missing = [flag for flag in REQUIRED if flag not in rest]
    if missing:
        sys.exit(f"missing flags: {missing}")
    ThreadingHTTPServer((args.host, args.port), handler(args.served_model_name)).serve_forever()


if __name__ == "__main__":
    main()
