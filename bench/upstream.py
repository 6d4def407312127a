"""A tiny, fast OpenAI-compatible upstream for tests and benchmarks: `python -m bench.upstream --port N`."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

Scope = MutableMapping[str, Any]  # Any: ASGI scopes and messages are plain dicts of mixed values (the ASGI spec)
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
TEXT_HEADERS = [(b"content-type", b"text/plain; version=0.0.4")]
GONE_KEPT = 1000


@dataclass(frozen=True)
class UpstreamOptions:
    """What the upstream answers and how slowly."""

    answer: str = "Hello from the fast upstream."
    tokens: int = 0
    delay: float = 0.0
    chunk_delay: float = 0.0
    api_key: str = ""
    max_tokens_limit: int = 0

    def words(self, max_tokens: int | None) -> list[str]:
        """The answer's tokens (its words, cycled to `tokens` when set), cut at max_tokens."""
        base = self.answer.split(" ")
        count = self.tokens or len(base)
        if max_tokens is not None:
            count = min(count, max(0, max_tokens))
        words = list(itertools.islice(itertools.cycle(base), count))
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def finish_reason(self, max_tokens: int | None) -> str:
        full = self.tokens or len(self.answer.split(" "))
        return "length" if max_tokens is not None and max_tokens < full else "stop"


class Journal:
    """Appends `start|end <request id> <time>` lines (O_APPEND, one write each) so a checker can find overlapping runs."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else -1
        self.write("boot", str(os.getpid()))

    def write(self, event: str, request_id: str, extra: str = "") -> None:
        if self.fd >= 0:
            os.write(self.fd, f"{event} {request_id or '-'} {time.time():.6f} {extra}\n".encode())


@dataclass
class UpstreamStats:
    """What the upstream has seen; served at /stats for tests.

    `gone`: for the latest requests whose client went away before the answer ended, the wall-clock time
    (time.time()) at which the connection closed, by x-request-id ("-" when the request had none).
    """

    requests: int = 0
    in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    refused: int = 0
    rejected: int = 0
    gone: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def client_gone(self, request_id: str, at: float) -> None:
        self.gone[request_id or "-"] = at
        self.gone.move_to_end(request_id or "-")
        while len(self.gone) > GONE_KEPT:
            self.gone.popitem(last=False)


class _Disconnect:
    """Watches the client's side of the connection once the body is read."""

    def __init__(self, receive: Receive) -> None:
        self.task = asyncio.ensure_future(receive())
        self.at = 0.0
        self.task.add_done_callback(self._note)

    def _note(self, task: asyncio.Future[Message]) -> None:
        if not task.cancelled():
            self.at = time.time()

    @property
    def happened(self) -> bool:
        return self.task.done()

    async def sleep(self, seconds: float) -> bool:
        """Sleeps; True when the client went away meanwhile."""
        if seconds > 0:
            await asyncio.wait([self.task], timeout=seconds)
        return self.happened

    def close(self) -> None:
        self.task.cancel()


def _prompt_tokens(body: dict[str, Any]) -> int:
    count = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            count += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
    return max(count, 1)


class Upstream:
    """The ASGI application: /v1/chat/completions (unary and SSE), /v1/models, /health, /metrics, /stats."""

    def __init__(self, options: UpstreamOptions, journal: Journal | None = None) -> None:
        self.options = options
        self.journal = journal or Journal("")
        self.stats = UpstreamStats()
        self.started = int(time.time())
        self.seq = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/v1/chat/completions" and scope["method"] == "POST":
            await self._chat(scope, receive, send)
        elif path == "/v1/models":
            await _respond(send, 200, JSON_HEADERS, orjson.dumps({"object": "list", "data": [self._model_card()]}))
        elif path == "/health":
            await _respond(send, 200, JSON_HEADERS, b"{}")
        elif path == "/metrics":
            await _respond(send, 200, TEXT_HEADERS, self._metrics())
        elif path == "/stats":
            await _respond(send, 200, JSON_HEADERS, orjson.dumps(self.stats.__dict__))
        else:
            await _respond(send, 404, JSON_HEADERS, b'{"error": {"message": "not found"}}')

    def _model_card(self) -> dict[str, Any]:
        return {"id": "fast-upstream", "object": "model", "created": self.started, "owned_by": "bench"}

    def _metrics(self) -> bytes:
        return (
            f"vllm:num_requests_running {self.stats.in_flight}\n"
            "vllm:num_requests_waiting 0\n"
            f"upstream_requests_total {self.stats.requests}\n"
        ).encode()

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        if (
            self.options.api_key
            and dict(scope["headers"]).get(b"authorization", b"") != b"Bearer " + self.options.api_key.encode()
        ):
            self.stats.refused += 1  # as vLLM with --api-key answers a caller without the key
            await _respond(send, 401, JSON_HEADERS, b'{"error": "Unauthorized"}')
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _respond(send, 400, JSON_HEADERS, b'{"error": {"message": "malformed JSON"}}')
            return
        self.stats.requests += 1
        limit = self.options.max_tokens_limit
        if limit and (self._max_tokens(body) or 0) > limit:
            self.stats.rejected += 1  # as vLLM answers a request longer than its context
            message = f"max_tokens must be at most {limit}"
            await _respond(send, 400, JSON_HEADERS, orjson.dumps({"error": {"message": message, "code": 400}}))
            return
        self.stats.in_flight += 1
        request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode()
        self.journal.write("start", request_id)
        disconnect = _Disconnect(receive)
        done = False
        try:
            done = await (self._stream(body, send, disconnect) if body.get("stream") else self._unary(body, send, disconnect))
        finally:
            disconnect.close()
            self.stats.in_flight -= 1
            self.journal.write("end", request_id, "done" if done else "cut")
        if done:
            self.stats.completed += 1
        else:
            self.stats.cancelled += 1
            self.stats.client_gone(request_id, disconnect.at or time.time())

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None

    def _usage(self, body: dict[str, Any], completion: int) -> dict[str, int]:
        prompt = _prompt_tokens(body)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _unary(self, body: dict[str, Any], send: Send, disconnect: _Disconnect) -> bool:
        if await disconnect.sleep(self.options.delay):
            return False
        max_tokens = self._max_tokens(body)
        words = self.options.words(max_tokens)
        answer = {
            "id": f"chatcmpl-up{next(self.seq)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words)},
                    "finish_reason": self.options.finish_reason(max_tokens),
                }
            ],
            "usage": self._usage(body, len(words)),
        }
        await _respond(send, 200, JSON_HEADERS, orjson.dumps(answer))
        return True

    async def _stream(self, body: dict[str, Any], send: Send, disconnect: _Disconnect) -> bool:
        max_tokens = self._max_tokens(body)
        words = self.options.words(max_tokens)
        head = {"id": f"chatcmpl-up{next(self.seq)}", "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = body.get("model", "")

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            data = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + orjson.dumps(data) + b"\n\n"

        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await _more(send, chunk({"role": "assistant", "content": ""}))
        for word in words:
            if await disconnect.sleep(self.options.chunk_delay):
                return False
            await _more(send, chunk({"content": word}))
        await _more(send, chunk({}, self.options.finish_reason(max_tokens)))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {**head, "choices": [], "usage": self._usage(body, len(words))}
            await _more(send, b"data: " + orjson.dumps(usage) + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        return True


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _more(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def server(options: UpstreamOptions, host: str = "127.0.0.1", port: int = 0, journal: str = "") -> uvicorn.Server:
    """A uvicorn server (httptools, no access log) for the upstream; `await server.serve()` runs it."""
    config = uvicorn.Config(
        Upstream(options, Journal(journal)),
        host=host,
        port=port,
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer", default=UpstreamOptions.answer, help="the fixed answer; its words are the tokens")
    parser.add_argument("--tokens", type=int, default=0, help="tokens per answer (the answer's words cycled); 0: its words")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before a unary answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay before each streamed token")
    parser.add_argument("--api-key-env", default="", help="require the bearer key this environment variable holds")
    parser.add_argument("--max-tokens-limit", type=int, default=0, help="answer 400 to a larger max_tokens (0: no limit)")
    parser.add_argument("--journal", default="", help="append start/end lines per request (by x-request-id) to this file")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
    if args.api_key_env and not api_key:
        parser.error(f"--api-key-env: the environment variable {args.api_key_env} is not set")
    options = UpstreamOptions(
        args.answer, args.tokens, args.delay_ms / 1000, args.chunk_delay_ms / 1000, api_key, args.max_tokens_limit
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(server(options, args.host, args.port, args.journal).serve())
    else:
        uvloop.run(server(options, args.host, args.port, args.journal).serve())


if __name__ == "__main__":
    main()
