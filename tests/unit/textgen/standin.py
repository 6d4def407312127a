"""A vLLM stand-in (vLLM cannot run here) served over a real local socket, and a backend attached to it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from aigw.common.v1 import common_pb2
from aigw_server.runtime.config import parse_config
from aigw_server.textgen.backend import TextgenBackend
from aigw_server.textgen.settings import resolve_settings
from tests.unit.http_peer import HttpPeer

METRICS = """\
vllm:num_requests_running{engine="0",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 200.0
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 50.0
"""


_CHUNKS = [
    {"choices": [{"delta": {"content": "o"}}]},
    {"choices": [{"delta": {"content": "k"}}]},
    {"choices": [{"delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
]
_SSE = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in _CHUNKS) + b"data: [DONE]\n\n"


class VllmStandIn:
    """Answers /health, /metrics, chat completions (streamed when asked) and the dev-mode sleep endpoints like vLLM."""

    def __init__(self) -> None:
        self.sleeping = False
        self.healthy = True
        self.chats: list[httpx.Request] = []
        self.calls: list[str] = []
        self.hosts: set[str] = set()  # every host textgen called
        self.bodies: list[bytes] = []
        self.metrics = METRICS
        self.late = 0  # health probes still to answer too late
        self.url = HttpPeer(self).url

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.hosts.add(request.url.host)
        self.calls.append(f"{request.method} {path}{'?' + request.url.query.decode() if request.url.query else ''}")
        if not self.healthy:
            raise httpx.ConnectError("refused", request=request)
        if path == "/health":
            if self.late > 0:
                self.late -= 1
                raise httpx.ReadTimeout("busy", request=request)
            return httpx.Response(200)
        if path == "/metrics":
            return httpx.Response(200, text=self.metrics)
        if path == "/sleep":
            self.sleeping = True
            return httpx.Response(200)
        if path == "/wake_up":
            self.sleeping = False
            return httpx.Response(200)
        if path == "/collective_rpc":
            self.bodies.append(request.content)
            return httpx.Response(200)
        if path == "/is_sleeping":
            return httpx.Response(200, json={"is_sleeping": self.sleeping})
        self.chats.append(request)
        if orjson.loads(request.content).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_SSE)
        answer = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}
        return httpx.Response(200, content=orjson.dumps(answer))


def make_backend(standin: VllmStandIn, crash_log: CrashLog | None = None, direct: bool = False, **backend: Any) -> TextgenBackend:
    raw = {
        "routing": {"status_interval_seconds": 0.02, "direct_engines": direct},
        "models": {"llama": {"served_name": "meta-llama/Llama-3-8B-Instruct"}, "qwen": {}},
        "backends": [
            {"name": "gpu-0", "kind": "textgen", "engine": "vllm", "mode": "attach", "url": standin.url + "/v1"}
            | {"models": ["llama"], "sleep_mode": True, "capacity": 32}
            | backend
        ],
    }
    settings = resolve_settings(parse_config(raw, env={}), {})
    return TextgenBackend(settings, crash_log or CrashLog())


class CrashLog:
    """Collects crash events in memory."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record(self, kind: str, model: str, message: str, log_tail: Any = (), details: Any = None) -> None:
        self.events.append((kind, message))


def chat() -> common_pb2.ChatJob:
    return common_pb2.ChatJob(messages=[common_pb2.ChatMessage(role="user", content="Hi")])
