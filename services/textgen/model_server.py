"""One model server as the backend sees it: a supervised process (one model) or an attached URL (its models)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import httpx

from aigw_common.errors import Unavailable
from services.textgen.commands import server_command, server_env
from services.textgen.metrics import NO_METRICS, UNKNOWN, parse_vllm_metrics, prefix_hit_rate
from services.textgen.process import Backoff, ServerProcess
from services.textgen.settings import ModelSpec, TextgenSettings
from services.textgen.upstream import UpstreamClient

log = logging.getLogger(__name__)

HEALTH_FAILURES_BEFORE_KILL = 3
STABLE_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
READY_POLL_SECONDS = 0.2


class ServerState(enum.Enum):
    """Where a model server is in its lifecycle (the BackendState names without their prefix)."""

    IDLE = 1
    LOADING = 2
    READY = 3
    SLEEPING = 4
    CRASHED = 5
    DRAINING = 6


class CrashSink(Protocol):
    """Where abnormal events go (the queue's crash log); `record` never blocks."""

    def record(
        self, kind: str, model: str, message: str, log_tail: Sequence[str] = (), details: Mapping[str, str] | None = None
    ) -> None:
        """Records an event of `kind` ("BACKEND_CRASH", "ENGINE_RESTART")."""


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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.specs = {spec.name: spec for spec in specs}
        self.slot = slot
        self.port = settings.backend.port + slot if settings.supervised else 0
        self.label = f"{settings.name}/{specs[0].name}" if settings.supervised else settings.name
        url = f"http://127.0.0.1:{self.port}" if settings.supervised else settings.url
        backend = settings.backend
        self.client = UpstreamClient(
            url, capacity=backend.capacity, timeout=backend.request_timeout_seconds, api_key=settings.api_key, transport=transport
        )
        self.state = ServerState.IDLE
        self.detail = ""
        self.in_flight = 0
        self.restarts = 0
        self.sleep_level = 0
        self.last_used = time.monotonic()
        self.metrics = NO_METRICS
        self.hit_rate = UNKNOWN
        self.process: ServerProcess | None = None
        self._crash_log = crash_log
        self._on_change = on_change
        self._backoff = Backoff()
        self._ready_since = 0.0
        self._failures = 0
        self._kill_reason = ""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def model(self) -> str:
        return next(iter(self.specs))

    def set_state(self, state: ServerState, detail: str = "") -> None:
        changed = state is not self.state
        self.state = state
        self.detail = detail
        if state is ServerState.READY:
            self._ready_since = time.monotonic()
            self._failures = 0
        if changed:
            self._on_change()

    async def start(self) -> None:
        """Supervise: start the process and wait until it answers (Unavailable if it does not). Attach: probe once."""
        if self.settings.supervised:
            try:
                await self._launch(ServerState.LOADING)
            except BaseException:
                why = self.detail
                await self.stop()
                self.detail = why
                raise
            self.set_state(ServerState.READY)
            self._tasks.append(asyncio.create_task(self._supervise(), name=f"{self.label}-supervise"))
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
        if self.process is not None:
            await self.process.stop(STOP_GRACE_SECONDS)
            self.process = None
        self.set_state(ServerState.IDLE)

    async def _launch(self, showing: ServerState) -> None:
        """Starts the command and waits for its health endpoint; the state shown meanwhile is `showing`."""
        backend = self.settings.backend
        if await self.client.healthy(self.settings.health_path):
            raise Unavailable(
                f"port {self.port} is already taken by another server; stop it or change backends.{backend.name}.port"
            )
        spec = next(iter(self.specs.values()))
        self.process = proc = ServerProcess(server_command(backend, spec, self.port), server_env(backend, os.environ), self.label)
        await proc.start()
        self.set_state(showing, self.detail)
        exited = asyncio.create_task(proc.wait())
        deadline = time.monotonic() + backend.startup_timeout_seconds
        try:
            while not await self.client.healthy(self.settings.health_path):
                if exited.done():
                    last = proc.tail()[-1:] or ["no output"]
                    self.detail = f"exited during startup with code {exited.result()}: {last[0][:200]}"
                    raise Unavailable(f"the model server for {spec.name!r} exited during startup (code {exited.result()})")
                if time.monotonic() > deadline:
                    self.detail = f"not ready after {backend.startup_timeout_seconds:g}s"
                    raise Unavailable(f"the model server for {spec.name!r} did not become ready in time")
                await asyncio.wait({exited}, timeout=READY_POLL_SECONDS)
        except Unavailable:
            await proc.stop(STOP_GRACE_SECONDS)
            raise
        finally:
            exited.cancel()

    async def _supervise(self) -> None:
        """Waits for the process to die; records the crash and restarts it with exponential backoff."""
        while self.process is not None:
            proc = self.process
            code = await proc.wait()
            proc.signal_group(signal.SIGKILL)
            uptime = time.monotonic() - self._ready_since
            reason = self._kill_reason or f"the model server exited with code {code}"
            self._kill_reason = ""
            self.set_state(ServerState.CRASHED, reason)
            log.error("model server crashed", extra={"server": self.label, "exit_code": code, "log_tail": proc.tail()})
            details = {"exit_code": str(code), "pid": str(proc.pid), "uptime_seconds": f"{uptime:.1f}"}
            self._crash_log.record("BACKEND_CRASH", self.model, reason, proc.tail(), details)
            if uptime >= STABLE_SECONDS:
                self._backoff.reset()
            await self._restart(reason)

    async def _restart(self, reason: str) -> None:
        """Starts the process again after growing delays until it answers; every attempt counts as a restart."""
        while True:
            delay = self._backoff.next_delay()
            self.detail = f"{reason}; restarting in {delay:g}s"
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self._launch(ServerState.CRASHED)
            except Unavailable:
                reason = f"restart {self.restarts} failed: {self.detail}"
                tail = self.process.tail() if self.process else []
                self._crash_log.record("BACKEND_CRASH", self.model, reason, tail, {"restarts": str(self.restarts)})
                continue
            self.set_state(ServerState.READY)
            message = f"the model server was restarted (restart {self.restarts}, after {delay:g}s backoff)"
            log.warning("model server restarted", extra={"server": self.label, "restarts": self.restarts})
            self._crash_log.record("ENGINE_RESTART", self.model, message, (), {"restarts": str(self.restarts)})
            return

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
        if self.settings.supervised:
            self._check_supervised(healthy)
        elif healthy and self.state in (ServerState.CRASHED, ServerState.LOADING):
            self.set_state(ServerState.READY)
        elif not healthy and self.state in (ServerState.READY, ServerState.DRAINING):
            message = f"the server at {self.settings.url} stopped answering"
            self.set_state(ServerState.CRASHED, message)
            self._crash_log.record("BACKEND_CRASH", self.model, message)
        if healthy and self.settings.polls_metrics:
            await self._scrape()

    def _check_supervised(self, healthy: bool) -> None:
        """A live process that stops answering is hung: kill it, and the crash path restarts it."""
        self._failures = 0 if healthy else self._failures + 1
        if self._failures >= HEALTH_FAILURES_BEFORE_KILL and self.process is not None:
            self._kill_reason = f"the model server stopped answering health checks ({self._failures} in a row) and was killed"
            log.error("model server hung; killing it", extra={"server": self.label})
            self.process.signal_group(signal.SIGKILL)
            self._failures = 0

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
