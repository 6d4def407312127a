"""One supervised model-server process (vLLM, transformers serve, DeepSeek-OCR on vLLM): started until healthy,
dying with us, its crashes (at startup too) written to the crash log, restarted with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from aigw_server.engines.process import Backoff, ServerProcess
from aigw_server.runtime.errors import Unavailable

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


def exit_words(code: int) -> str:
    """An exit status in words: "code 3", or "code -11, signal SIGSEGV" for a process killed by a signal."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code}, signal {signal.Signals(-code).name}"
    return f"code {code}"


def exit_details(code: int, pid: int) -> dict[str, str]:
    """The crash event's details of an exit status."""
    details = {"exit_code": str(code), "pid": str(pid)}
    if code < 0:
        with contextlib.suppress(ValueError):
            details["signal"] = signal.Signals(-code).name
    return details


class EngineSupervisor:
    """Runs one model-server command: start until healthy, watch, record crashes, restart with backoff, stop.

    The state it shows (LOADING, READY, CRASHED, IDLE) goes to `on_state`; the owner adds its own
    (SLEEPING, DRAINING) on top. `healthy` probes the server's health endpoint.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        label: str,
        model: str,
        healthy: Callable[[], Awaitable[bool]],
        startup_timeout: float,
        hang_timeout: float = 30.0,
        crash_log: CrashSink,
        on_state: Callable[[ServerState, str], None],
        taken: str = "",
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.label = label
        self.model = model
        self.healthy = healthy
        self.startup_timeout = startup_timeout
        self.hang_timeout = hang_timeout
        self.crash_log = crash_log
        self.on_state = on_state
        self.taken = taken or f"something already answers where {label}'s server would listen"
        self.process: ServerProcess | None = None
        self.restarts = 0
        self.detail = ""
        self._backoff = Backoff()
        self._ready_since = 0.0
        self._failures = 0
        self._failing_since = 0.0
        self._kill_reason = ""
        self._exit_details: dict[str, str] = {}
        self._watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The server process's id (0 when none runs)."""
        return self.process.pid if self.process is not None else 0

    def _show(self, state: ServerState, detail: str = "") -> None:
        self.detail = detail
        if state is ServerState.READY:
            self._ready_since = time.monotonic()
            self._failures = 0
        self.on_state(state, detail)

    async def start(self) -> None:
        """Starts the server and waits until it is healthy; a failed start is recorded and raises Unavailable."""
        try:
            await self._launch(ServerState.LOADING)
        except Unavailable as exc:
            why, tail = self.detail, self.process.tail() if self.process else []
            details = dict(self._exit_details)
            self.crash_log.record("BACKEND_CRASH", self.model, exc.message, tail, details)
            await self.stop()
            self.detail = why
            raise
        except BaseException:
            await self.stop()
            raise
        self._show(ServerState.READY)
        self._watch = asyncio.create_task(self._supervise(), name=f"{self.label}-supervise")

    async def stop(self) -> None:
        """Stops watching, then the process group (never counted as a crash)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.process is not None:
            await self.process.stop(STOP_GRACE_SECONDS)
            self.process = None

    async def _launch(self, showing: ServerState) -> None:
        """Starts the command and waits for its health endpoint; the state shown meanwhile is `showing`."""
        self._exit_details = {}
        if await self.healthy():
            raise Unavailable(self.taken)
        self.process = proc = ServerProcess(self.command, self.env, self.label)
        try:
            await proc.start()
        except OSError as exc:
            self.detail = f"cannot run {self.command[0]!r}: {exc.strerror}"
            raise Unavailable(f"the model server for {self.model!r} cannot be started: {exc.strerror}") from None
        self._show(showing, self.detail)
        exited = asyncio.create_task(proc.wait())
        deadline = time.monotonic() + self.startup_timeout
        try:
            while not await self.healthy():
                if exited.done():
                    code = exited.result()
                    last = proc.tail()[-1:] or ["no output"]
                    self._exit_details = exit_details(code, proc.pid)
                    self.detail = f"exited during startup with {exit_words(code)}: {last[0][:200]}"
                    raise Unavailable(f"the model server for {self.model!r} exited during startup ({exit_words(code)})")
                if time.monotonic() > deadline:
                    self.detail = f"not ready after {self.startup_timeout:g}s"
                    raise Unavailable(f"the model server for {self.model!r} did not become ready in time")
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
            reason = self._kill_reason or f"the model server exited with {exit_words(code)}"
            self._kill_reason = ""
            self._show(ServerState.CRASHED, reason)
            log.error("model server crashed", extra={"server": self.label, "exit_code": code, "log_tail": proc.tail()})
            details = {**exit_details(code, proc.pid), "uptime_seconds": f"{uptime:.1f}"}
            self.crash_log.record("BACKEND_CRASH", self.model, reason, proc.tail(), details)
            if uptime >= STABLE_SECONDS:
                self._backoff.reset()
            await self._restart(reason)

    async def _restart(self, reason: str) -> None:
        """Starts the process again after growing delays until it answers; every attempt counts as a restart."""
        while True:
            delay = self._backoff.next_delay()
            self.detail = f"{reason}; restarting in {delay:g}s"
            self.on_state(ServerState.CRASHED, self.detail)
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self._launch(ServerState.CRASHED)
            except Unavailable:
                reason = f"restart {self.restarts} failed: {self.detail}"
                tail = self.process.tail() if self.process else []
                details = {**self._exit_details, "restarts": str(self.restarts)}
                self.crash_log.record("BACKEND_CRASH", self.model, reason, tail, details)
                continue
            self._show(ServerState.READY)
            message = f"the model server was restarted (restart {self.restarts}, after {delay:g}s backoff)"
            log.warning("model server restarted", extra={"server": self.label, "restarts": self.restarts})
            self.crash_log.record("ENGINE_RESTART", self.model, message, (), {"restarts": str(self.restarts)})
            return

    def check_health(self, healthy: bool, now: float | None = None) -> None:
        """A live process that stops answering is hung: kill it, and the crash path restarts it.

        Hung means at least HEALTH_FAILURES_BEFORE_KILL failed checks in a row spanning `hang_timeout`
        seconds: a server that is only busy (a starved CPU, a long prefill) answers late once and is left alone.
        """
        now = time.monotonic() if now is None else now
        if healthy:
            self._failures = 0
            return
        if self._failures == 0:
            self._failing_since = now
        self._failures += 1
        silent = now - self._failing_since
        if self._failures >= HEALTH_FAILURES_BEFORE_KILL and silent >= self.hang_timeout and self.process is not None:
            self._kill_reason = (
                f"the model server stopped answering health checks ({self._failures} in a row over {silent:.0f}s) and was killed"
            )
            log.error("model server hung; killing it", extra={"server": self.label})
            self.process.signal_group(signal.SIGKILL)
            self._failures = 0
