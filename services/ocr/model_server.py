"""A supervised OpenAI-compatible model server (vLLM): started, health-checked, restarted after a crash, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from aigw_common.errors import Unavailable
from aigw_common.lifeline import dying_with

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 0.5
STOP_GRACE = 15.0
MAX_BACKOFF = 30.0


class ModelServer:
    """Runs `command` in its own process group, writing its output to `log_file`; `/health` says when it is up."""

    def __init__(
        self,
        command: Sequence[str],
        client: httpx.AsyncClient,
        startup_timeout: float,
        log_file: Path,
        changed: Callable[[], None],
    ) -> None:
        self.command = list(command)
        self.changed = changed
        self.client = client
        self.startup_timeout = startup_timeout
        self.log_file = log_file
        self.restarts = 0
        self.crashed = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int:
        """The server process's id (0 before the first start)."""
        return self._proc.pid if self._proc is not None else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Starts the process and waits until `/health` answers 200 (or fails with UNAVAILABLE)."""
        self._stopping = False
        await self._launch()
        self._watch = asyncio.create_task(self._supervise(), name="ocr-model-server")

    async def _launch(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *dying_with(os.getpid(), self.command),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise Unavailable(f"cannot start the model server {self.command[0]!r}: {exc.strerror}") from None
        log.info("model server started", extra={"pid": self._proc.pid, "argv": self.command})
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while loop.time() < deadline:
            if not self.running:
                raise Unavailable(f"the model server exited during startup; see {self.log_file}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get("/health")).status_code == 200:
                    if self.crashed:
                        self.crashed = ""
                        self.changed()
                    return
            await asyncio.sleep(HEALTH_INTERVAL)
        await self._terminate()
        raise Unavailable(f"the model server was not healthy within {self.startup_timeout:g}s")

    async def _supervise(self) -> None:
        """Restarts the server when it dies unasked, with exponential backoff."""
        delay = 1.0
        while not self._stopping:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            self.crashed = f"model server exited with code {code}; restarting (restart {self.restarts})"
            log.error("model server crashed", extra={"exit_code": code, "restarts": self.restarts})
            self.changed()
            await asyncio.sleep(delay)
            try:
                await self._launch()
                delay = 1.0
            except Unavailable as exc:
                self.crashed = exc.message
                delay = min(delay * 2, MAX_BACKOFF)

    async def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a grace period."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
