"""vLLM's own sleep/wake HTTP routes (from the installed package) in front of a stand-in engine (run under .venv-vllm).

vLLM's CPU build cannot sleep, so the engine behind the real routes is this stand-in, which keeps
the memory semantics of vLLM's sleep mode: level 1 offloads the weights and drops the KV cache,
level 2 drops both; waking the weights after level 2 gives back memory without its contents until
`reload_weights` runs. Chat answers show which weights answered, so a wrong wake sequence is visible.

    python sleep_server.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from vllm.entrypoints.serve.dev.rpc.api_router import attach_router as attach_rpc_router
from vllm.entrypoints.serve.dev.sleep.api_router import attach_router as attach_sleep_router

TAGS = ("weights", "kv_cache")


class StandInEngine:
    """The part of vLLM's EngineClient that the sleep, wake and collective_rpc routes call."""

    def __init__(self) -> None:
        self.asleep: set[str] = set()
        self.weights = "loaded"  # loaded | offloaded | discarded | uninitialised
        self.calls: list[str] = []

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        self.calls.append(f"sleep level={level} mode={mode}")
        self.asleep = set(TAGS)
        self.weights = "offloaded" if level == 1 else "discarded"

    async def wake_up(self, tags: list[str] | None = None) -> bool:
        self.calls.append(f"wake_up tags={','.join(tags) if tags else 'all'}")
        for tag in tags or TAGS:
            if tag == "weights" and "weights" in self.asleep:
                self.weights = "loaded" if self.weights == "offloaded" else "uninitialised"
            self.asleep.discard(tag)
        return not self.asleep

    async def is_sleeping(self) -> bool:
        return bool(self.asleep)

    async def collective_rpc(
        self, method: str, timeout: float | None = None, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> list[Any]:
        self.calls.append(f"collective_rpc {method}")
        if method != "reload_weights":
            raise ValueError(f"unknown method {method}")
        if "weights" in self.asleep:
            raise RuntimeError("reload_weights needs the weights' memory awake")
        self.weights = "loaded"
        return [None]


def build_app(engine: StandInEngine) -> FastAPI:
    app = FastAPI()
    app.state.engine_client = engine
    attach_sleep_router(app)
    attach_rpc_router(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "tiny", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        if engine.asleep:
            raise HTTPException(503, "the engine is asleep")
        content = "sensible text" if engine.weights == "loaded" else f"garbage from {engine.weights} weights"
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }

    @app.get("/standin/state")
    async def state() -> dict[str, Any]:
        return {"asleep": sorted(engine.asleep), "weights": engine.weights, "calls": engine.calls}

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(StandInEngine()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
