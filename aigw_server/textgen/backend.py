"""The textgen backend: its model servers, generation through them, their lifecycle and the status routers read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aigw.common.v1 import common_pb2
from aigw_server.engines.chat import ChatTarget, StreamPart, complete, request_body
from aigw_server.engines.chat import stream as stream_chat
from aigw_server.engines.process import Backoff
from aigw_server.runtime.errors import FailedPrecondition, GatewayError, InvalidArgument, NotFound, Unavailable
from aigw_server.textgen.metrics import UNKNOWN
from aigw_server.textgen.model_server import CrashSink, ModelServer, ServerState
from aigw_server.textgen.settings import ModelSpec, TextgenSettings

log = logging.getLogger(__name__)

DEFAULT_DRAIN_SECONDS = 30.0
DRAIN_POLL_SECONDS = 0.02
# The backend's state is the most telling of its servers' states, in this order.
STATE_ORDER = (
    ServerState.DRAINING,
    ServerState.READY,
    ServerState.LOADING,
    ServerState.CRASHED,
    ServerState.SLEEPING,
)
NOT_READY = {
    ServerState.LOADING: "is still loading",
    ServerState.SLEEPING: "is asleep (WakeModel or LoadModel wakes it)",
    ServerState.CRASHED: "has a crashed model server that is being restarted",
    ServerState.DRAINING: "is draining before an unload or switch",
    ServerState.IDLE: "is not loaded",
}

Notify = Callable[[bool], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class BackendSnapshot:
    """The backend's status at one moment, taken from memory only."""

    backend: str
    engine: str
    state: ServerState
    loaded_models: list[str]
    available_models: list[str]
    in_flight: int
    capacity: int
    server_running: int
    server_waiting: int
    kv_cache_usage: float
    prefix_cache_hit_rate: float
    detail: str
    restarts: int


@dataclass(frozen=True)
class EngineInfo:
    """One serving engine as a router calls it directly (GetEngines): holds a secret, never logged or shown."""

    base_url: str
    engine: str
    models: list[ModelSpec]
    priority_scheduling: bool
    stream_usage: bool
    api_key: str = field(repr=False)
    request_timeout_seconds: float
    capacity: int


def _known_sum(values: list[float]) -> int:
    known = [v for v in values if v >= 0]
    return int(sum(known)) if known else -1


class TextgenBackend:
    """Owns the model servers of one backend; every lifecycle change holds one lock."""

    def __init__(self, settings: TextgenSettings, crash_log: CrashSink) -> None:
        self.settings = settings
        self._crash_log = crash_log
        self._servers: dict[str, ModelServer] = {}
        self._lock = asyncio.Lock()
        self._notify: Notify | None = None
        self._serving: bool | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._loader: asyncio.Task[None] | None = None
        self._detail = ""
        self._past_restarts = 0

    # ---- start and stop ----

    async def start(self, notify: Notify) -> None:
        """Reports NOT_SERVING, then attaches, or loads the initial model in the background."""
        self._notify = notify
        self._serving = False
        await notify(False)
        if not self.settings.supervised:
            server = self._new_server(list(self.settings.models.values()), slot=0)
            self._servers = dict.fromkeys(self.settings.models, server)
            await server.start()
        elif self.settings.backend.initial_model:
            self._loader = asyncio.create_task(self._load_initial(self.settings.backend.initial_model), name="initial-load")

    async def _load_initial(self, model: str) -> None:
        """Loads the initial model, retrying with backoff: a server that dies at start must not leave us NOT_SERVING."""
        backoff = Backoff()
        while True:
            try:
                await self.load(model)
                return
            except GatewayError as exc:
                if self._servers:
                    return  # an operator loaded something meanwhile; theirs is the decision now
                delay = backoff.next_delay()
                log.error(
                    "initial model failed to load; retrying",
                    extra={"model": model, "reason": exc.message, "detail": self._detail, "retry_in_s": delay},
                )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
        async with self._lock:
            for server in self._unique():
                await self._stop_server(server)

    # ---- generation (the hot path: no lock, no I/O besides the one upstream call) ----

    def _prepare(
        self, model: str, chat: common_pb2.ChatJob, priority: int, stream: bool
    ) -> tuple[ChatTarget, dict[str, Any], ModelServer]:
        spec = self.settings.models.get(model)
        if spec is None:
            raise self._unknown(model)
        target = self._target(spec)
        body = request_body(target, chat, priority, stream)
        server = self._servers.get(model)
        if server is None or server.state is not ServerState.READY:
            state = server.state if server else ServerState.IDLE
            raise Unavailable(f"model {model!r} {NOT_READY[state]} on backend {self.settings.name}")
        server.last_used = time.monotonic()
        return target, body, server

    def _target(self, spec: ModelSpec) -> ChatTarget:
        return ChatTarget(
            model=spec.name,
            upstream_name=spec.upstream_name,
            default_max_tokens=spec.default_max_tokens,
            priority_scheduling=self.settings.priority_scheduling,
            stream_usage=self.settings.stream_usage,
        )

    def _unknown(self, model: str) -> GatewayError:
        if not model:
            return InvalidArgument("model is required", field="model")
        if model in self.settings.known_models:
            return Unavailable(f"model {model!r} is not served by backend {self.settings.name}")
        return NotFound(f"unknown model {model!r}")

    async def generate(self, model: str, chat: common_pb2.ChatJob, priority: int, request_id: str) -> common_pb2.ChatResult:
        """One whole answer; UNAVAILABLE when the model is not ready here or its server fails."""
        target, body, server = self._prepare(model, chat, priority, stream=False)
        server.in_flight += 1
        try:
            return await complete(server.client, target, body, request_id)
        finally:
            server.in_flight -= 1

    async def stream(self, model: str, chat: common_pb2.ChatJob, priority: int, request_id: str) -> AsyncIterator[StreamPart]:
        """(delta, "", None) per text chunk, then ("", finish_reason, usage) once."""
        target, body, server = self._prepare(model, chat, priority, stream=True)
        server.in_flight += 1
        try:
            async for part in stream_chat(server.client, target, body, request_id):
                yield part
        finally:
            server.in_flight -= 1

    # ---- lifecycle ----

    def _loadable(self, model: str) -> ModelSpec:
        spec = self.settings.models.get(model)
        if spec is not None:
            return spec
        if model in self.settings.known_models:
            raise FailedPrecondition(f"backend {self.settings.name} is not configured to serve model {model!r}")
        raise self._unknown(model)

    def _require_supervised(self, action: str) -> None:
        if not self.settings.supervised:
            raise FailedPrecondition(
                f"backend {self.settings.name} is attached to a server it does not manage "
                f"({self.settings.url}); it cannot {action}"
            )

    def _require_sleep(self) -> None:
        if not self.settings.sleep_capable:
            raise FailedPrecondition(
                f"backend {self.settings.name} has no sleep mode (it needs engine vllm with sleep_mode: true)"
            )

    async def load(self, model: str) -> str:
        """Starts the model's server (or wakes it); FAILED_PRECONDITION when max_models are already loaded."""
        spec = self._loadable(model)
        async with self._lock:
            server = self._servers.get(model)
            if server is not None:
                return await self._revive(server)
            self._require_supervised("load models")
            held = self._unique()
            if len(held) >= self.settings.backend.max_models:
                names = ", ".join(s.model for s in held)
                raise FailedPrecondition(
                    f"backend {self.settings.name} already holds {names} (max_models {self.settings.backend.max_models}); "
                    "unload one or use SwitchModel"
                )
            await self._start_server(spec)
            return "loaded"

    async def _revive(self, server: ModelServer) -> str:
        if server.state is ServerState.SLEEPING:
            await server.wake()
            return "woken"
        if server.state in (ServerState.READY, ServerState.DRAINING):
            return "already loaded"
        raise Unavailable(f"the model server {NOT_READY[server.state]}: {server.detail}")

    async def unload(self, model: str, drain_timeout: float, force: bool) -> str:
        """Drains, then stops the model's server (every server when `model` is empty)."""
        if model:
            self._loadable(model)
        async with self._lock:
            self._require_supervised("unload models")
            if model and model not in self._servers:
                return "not loaded"
            targets = [self._servers[model]] if model else self._unique()
            if not targets:
                return "nothing was loaded"
            await self._drain(targets, drain_timeout, force)
            for server in targets:
                await self._stop_server(server)
            return "unloaded"

    async def switch(self, model: str, drain_timeout: float, force: bool) -> str:
        """Drains the others, puts them to sleep (sleep mode, while slots last) or stops them, then loads `model`."""
        spec = self._loadable(model)
        async with self._lock:
            self._require_supervised("switch models")
            target = self._servers.get(model)
            others = sorted((s for s in self._unique() if s is not target), key=lambda s: s.last_used, reverse=True)
            awake = [s for s in others if s.state is not ServerState.SLEEPING]
            if target is not None and target.state is ServerState.READY and not awake:
                return "already loaded"
            await self._drain(awake, drain_timeout, force)
            keep_asleep = self.settings.backend.max_models - 1 if self.settings.sleep_capable else 0
            for i, server in enumerate(others):
                await self._retire(server, asleep=i < keep_asleep)
            if target is not None:
                return "switched (" + await self._revive(target) + ")"
            await self._start_server(spec)
            return "switched"

    async def _retire(self, server: ModelServer, asleep: bool) -> None:
        if asleep and server.state is ServerState.SLEEPING:
            return
        if asleep and server.state is ServerState.DRAINING:
            try:
                await server.sleep(1)
                return
            except GatewayError as exc:
                log.warning("sleep failed; stopping the server instead", extra={"server": server.label, "reason": exc.message})
        await self._stop_server(server)

    async def sleep(self, level: int) -> str:
        """Drains, then puts every awake model to sleep (vLLM sleep mode); returns what happened."""
        self._require_sleep()
        level = level or 1
        if level not in (1, 2):
            raise InvalidArgument(f"sleep level must be 1 or 2, got {level}", field="level")
        async with self._lock:
            awake = [s for s in self._unique() if s.state is ServerState.READY]
            if not awake and not any(s.state is ServerState.SLEEPING for s in self._unique()):
                raise FailedPrecondition(f"backend {self.settings.name} has no model loaded")
            await self._drain(awake, DEFAULT_DRAIN_SECONDS, force=False)
            for server in awake:
                try:
                    await server.sleep(level)
                except GatewayError:
                    server.end_drain()
                    raise
            if not awake:
                return "already asleep"
            return f"asleep at level {level}: {', '.join(s.model for s in awake)}"

    async def wake(self) -> str:
        """Wakes every sleeping model; nothing to do when none sleeps. Returns what happened."""
        self._require_sleep()
        async with self._lock:
            woken = []
            for server in self._unique():
                if server.state is ServerState.SLEEPING:
                    await server.wake()
                    woken.append(server.model)
            return f"woken: {', '.join(woken)}" if woken else "nothing was asleep"

    async def _drain(self, servers: list[ModelServer], timeout: float, force: bool) -> None:
        """Stops new work on `servers` and waits for theirs; refuses (FAILED_PRECONDITION) when it does not end in time.

        Routers call engines directly too (routing.direct_engines): they stop sending once their next
        status poll shows the drain, so the drain lasts at least one status interval, and where the
        engine exports metrics its own count of running and waiting requests must reach zero as well.
        """
        timeout = timeout if timeout > 0 else DEFAULT_DRAIN_SECONDS
        for server in servers:
            server.begin_drain()
        start = time.monotonic()
        deadline, settled = start + timeout, start + self.settings.direct_grace_seconds
        while (left := await self._busy(servers)) or time.monotonic() < settled:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if left and not force:
            for server in servers:
                server.end_drain()
            raise FailedPrecondition(
                f"{left} request(s) still in flight after draining for {timeout:g}s; try again later or force it"
            )

    async def _busy(self, servers: list[ModelServer]) -> int:
        """Requests still running on `servers`: ours, or the engines' own count where they export one."""
        own = sum(s.in_flight for s in servers)
        if own or not self.settings.direct_grace_seconds or not self.settings.polls_metrics:
            return own
        counted = [await s.engine_load() for s in servers]
        return sum(c for c in counted if c > 0)

    def _new_server(self, specs: list[ModelSpec], slot: int) -> ModelServer:
        return ModelServer(self.settings, specs, slot=slot, crash_log=self._crash_log, on_change=self._changed)

    async def _start_server(self, spec: ModelSpec) -> None:
        taken = {s.slot for s in self._unique()}
        slot = min(set(range(self.settings.backend.max_models)) - taken)
        server = self._new_server([spec], slot)
        self._servers[spec.name] = server
        try:
            await server.start()
        except GatewayError as exc:
            self._detail = f"loading {spec.name} failed: {server.detail or exc.message}"
            del self._servers[spec.name]
            self._changed()
            raise
        self._detail = ""

    async def _stop_server(self, server: ModelServer) -> None:
        for name in [n for n, s in self._servers.items() if s is server]:
            del self._servers[name]
        self._past_restarts += server.restarts
        await server.stop()
        self._changed()

    def _unique(self) -> list[ModelServer]:
        return list(dict.fromkeys(self._servers.values()))

    # ---- health and status ----

    def _changed(self) -> None:
        """Called on every state change: health is SERVING exactly when some model is READY."""
        serving = any(s.state is ServerState.READY for s in self._servers.values())
        if serving == self._serving or self._notify is None:
            return
        self._serving = serving
        task = asyncio.get_running_loop().create_task(self._notify(serving))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def snapshot(self) -> BackendSnapshot:
        servers = self._unique()
        states = {s.state for s in servers}
        state = next((st for st in STATE_ORDER if st in states), ServerState.IDLE)
        live = [s for s in servers if s.state in (ServerState.READY, ServerState.DRAINING)]
        loaded = [name for name, s in self._servers.items() if s.state is ServerState.READY]
        kv = [s.metrics.kv_cache_usage for s in live if s.metrics.kv_cache_usage >= 0]
        rates = [s.hit_rate for s in live if s.hit_rate >= 0]
        return BackendSnapshot(
            backend=self.settings.name,
            engine=self.settings.backend.engine,
            state=state,
            loaded_models=loaded,
            available_models=list(self.settings.models),
            in_flight=sum(s.in_flight for s in servers),
            capacity=self.settings.backend.capacity,
            server_running=_known_sum([s.metrics.running for s in live]),
            server_waiting=_known_sum([s.metrics.waiting for s in live]),
            kv_cache_usage=max(kv) if kv else UNKNOWN,
            prefix_cache_hit_rate=sum(rates) / len(rates) if rates else UNKNOWN,
            detail=next((s.detail for s in servers if s.detail), self._detail),
            restarts=self._past_restarts + sum(s.restarts for s in servers),
        )

    def engines(self) -> list[EngineInfo]:
        """The engines that take new work now (READY), with what they serve, where routers reach them and their credential."""
        backend = self.settings.backend
        return [
            EngineInfo(
                # Routers may reach the engine at another address than textgen's own probes (a pod's IP).
                base_url=self.settings.advertise_url or server.url,
                engine=backend.engine,
                models=[spec for name, spec in self.settings.models.items() if self._servers.get(name) is server],
                priority_scheduling=self.settings.priority_scheduling,
                stream_usage=self.settings.stream_usage,
                api_key=server.api_key,
                request_timeout_seconds=backend.request_timeout_seconds,
                capacity=backend.capacity,
            )
            for server in self._unique()
            if server.state is ServerState.READY
        ]

    def server_of(self, model: str) -> ModelServer | None:
        """The server holding `model`, if any (operators' tools and tests look at its process)."""
        return self._servers.get(model)
