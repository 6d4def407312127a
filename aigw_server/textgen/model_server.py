"""One model server as the backend sees it: a supervised process (one model) or an attached URL (its models)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence

from aigw_server.engines.openai_http import EngineClient
from aigw_server.engines.process import ServerProcess
from aigw_server.engines.supervisor import HEALTH_FAILURES_BEFORE_KILL, CrashSink, EngineSupervisor, ServerState
from aigw_server.runtime.errors import Unavailable
from aigw_server.textgen.commands import server_command, server_env
from aigw_server.textgen.metrics import NO_METRICS, UNKNOWN, parse_vllm_metrics, prefix_hit_rate
from aigw_server.textgen.settings import ModelSpec, TextgenSettings

log = logging.getLogger(__name__)

__all__ = ["CrashSink", "ModelServer", "ServerState"]


class ModelServer:
    """State, client and background work of one model server."""

    def __init__(
        self,
        settings: TextgenSettings,
        specs: Sequence[ModelSpec],
        *,
        slot: int,
        crash_log: CrashSink,
        on_change: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.specs = {spec.name: spec for spec in specs}
        self.slot = slot
        self.port = settings.backend.port + slot if settings.supervised else 0
        self.label = f"{settings.name}/{specs[0].name}" if settings.supervised else settings.name
        self.url = f"http://127.0.0.1:{self.port}" if settings.supervised else settings.url
        # A supervised vLLM gets a key of its own for this load; only textgen and routers (GetEngines) see it.
        self.api_key = secrets.token_urlsafe(32) if settings.generates_api_key else settings.api_key
        backend = settings.backend
        self.client = EngineClient(
            self.url,
            capacity=backend.capacity,
            timeout=backend.request_timeout_seconds,
            api_key=self.api_key,
        )
        self.state = ServerState.IDLE
        self.detail = ""
        self.in_flight = 0
        self.sleep_level = 0
        self.last_used = time.monotonic()
        self.metrics = NO_METRICS
        self.hit_rate = UNKNOWN
        self.engine: EngineSupervisor | None = None
        self._missed = 0  # failed health probes in a row (an attached server)
        self._crash_log = crash_log
        self._on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def model(self) -> str:
        return next(iter(self.specs))

    @property
    def process(self) -> ServerProcess | None:
        """The supervised process now running, if any."""
        return self.engine.process if self.engine is not None else None

    @property
    def restarts(self) -> int:
        """Restarts of the supervised process after crashes (0 when attached)."""
        return self.engine.restarts if self.engine is not None else 0

    def set_state(self, state: ServerState, detail: str = "") -> None:
        changed = state is not self.state
        self.state = state
        self.detail = detail
        if changed:
            self._on_change()

    def _supervisor(self) -> EngineSupervisor:
        backend = self.settings.backend
        spec = next(iter(self.specs.values()))
        return EngineSupervisor(
            server_command(backend, spec, self.port),
            server_env(backend, os.environ, self.api_key),
            label=self.label,
            model=spec.name,
            healthy=lambda: self.client.healthy(self.settings.health_path),
            startup_timeout=backend.startup_timeout_seconds,
            hang_timeout=backend.hang_timeout_seconds,
            crash_log=self._crash_log,
            on_state=self.set_state,
            taken=f"port {self.port} is already taken by another server; stop it or change backends.{backend.name}.port",
        )

    async def start(self) -> None:
        """Supervise: start the process and wait until it answers (Unavailable if it does not). Attach: probe once."""
        if self.settings.supervised:
            self.engine = self._supervisor()
            try:
                await self.engine.start()
            except BaseException:
                why = self.engine.detail
                await self.stop()
                self.detail = why
                raise
        elif await self.client.healthy(self.settings.health_path):
            self.set_state(ServerState.READY)
        else:
            self.set_state(ServerState.CRASHED, f"the server at {self.settings.url} is not answering")
        self._tasks.append(asyncio.create_task(self._poll(), name=f"{self.label}-poll"))

    async def stop(self) -> None:
        """Stops background work, the client and then the process (never counted as a crash)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # Closing the pool first cuts requests still in flight (a forced unload): they fail UNAVAILABLE
        # and the server, seeing its clients gone, stops generating and shuts down at once.
        await self.client.aclose()
        if self.engine is not None:
            await self.engine.stop()
        self.set_state(ServerState.IDLE)

    async def _poll(self) -> None:
        """Cheap background probes: health (liveness) and, where exported, Prometheus metrics."""
        while True:
            await asyncio.sleep(self.settings.status_interval_seconds)
            await self.probe()

    async def probe(self) -> None:
        """One round of health and metrics polling; GetStatus reads what this leaves behind."""
        live = self.state in (ServerState.READY, ServerState.DRAINING)
        if self.state is ServerState.SLEEPING or (self.settings.supervised and not live):
            return
        healthy = await self.client.healthy(self.settings.health_path)
        if self.engine is not None:
            self.engine.check_health(healthy)
        elif healthy:
            self._missed = 0
            if self.state in (ServerState.CRASHED, ServerState.LOADING):
                self.set_state(ServerState.READY)
        elif live:
            # One late answer is a busy server (a long prefill, a starved CPU), not a dead one.
            self._missed += 1
            if self._missed >= HEALTH_FAILURES_BEFORE_KILL:
                self._missed = 0
                message = (
                    f"the server at {self.settings.url} stopped answering ({HEALTH_FAILURES_BEFORE_KILL} health checks in a row)"
                )
                self.set_state(ServerState.CRASHED, message)
                self._crash_log.record("BACKEND_CRASH", self.model, message)
        if healthy and self.settings.polls_metrics:
            await self._scrape()

    async def engine_load(self) -> int:
        """Running plus waiting requests the engine reports now (-1 when it exports neither)."""
        await self._scrape()
        known = [v for v in (self.metrics.running, self.metrics.waiting) if v >= 0]
        return int(sum(known)) if known else -1

    async def _scrape(self) -> None:
        text = await self.client.metrics_text()
        current = parse_vllm_metrics(text) if text else NO_METRICS
        self.hit_rate = prefix_hit_rate(self.metrics, current, self.hit_rate)
        self.metrics = current

    def begin_drain(self) -> None:
        if self.state is ServerState.READY:
            self.set_state(ServerState.DRAINING)

    def end_drain(self) -> None:
        if self.state is ServerState.DRAINING:
            self.set_state(ServerState.READY)

    async def sleep(self, level: int) -> None:
        """vLLM sleep mode: level 1 offloads weights to CPU memory, level 2 discards them."""
        await self.client.control("POST", "/sleep", {"level": level})
        self.metrics = NO_METRICS
        self.sleep_level = level
        self.set_state(ServerState.SLEEPING, f"asleep at level {level}")

    async def wake(self) -> None:
        """Wakes a sleeping server. After level 2 the weights are gone: vLLM's documented sequence
        restores memory for the weights, reloads them from the checkpoint, and only then gives the KV
        cache back (https://docs.vllm.ai/en/latest/features/sleep_mode.html); a bare /wake_up would
        serve from uninitialised weights."""
        if self.sleep_level == 2:
            await self.client.control("POST", "/wake_up", {"tags": "weights"})
            await self.client.control("POST", "/collective_rpc", body={"method": "reload_weights"})
            await self.client.control("POST", "/wake_up", {"tags": "kv_cache"})
        else:
            await self.client.control("POST", "/wake_up")
        answer = await self.client.control("GET", "/is_sleeping")
        if isinstance(answer, dict) and answer.get("is_sleeping"):
            raise Unavailable("the model server is still asleep after waking it")
        self.sleep_level = 0
        self.set_state(ServerState.READY)
