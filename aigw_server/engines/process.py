"""A supervised model server process: its own process group, dies with us, keeps its last output lines."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aigw_server.runtime.lifeline import dying_with

log = logging.getLogger("aigw.engines.server")

TAIL_LINES = 50
MAX_LINE = 1000


@dataclass
class Backoff:
    """Exponential delays between restarts: initial, initial*factor, ... capped at maximum."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


class ServerProcess:
    """One run of a model server command (a new object per start)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], label: str) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.label = label
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else 0

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def tail(self) -> list[str]:
        """The last lines it wrote (stdout and stderr together)."""
        return list(self._tail)

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *dying_with(os.getpid(), self.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read(self._proc.stdout), name=f"{self.label}-output")
        log.info("model server started", extra={"server": self.label, "pid": self._proc.pid, "argv": self.argv})

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        """Keeps the tail and logs each line; reads to EOF so the child never blocks on a full pipe."""
        if stream is None:
            return
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._keep(raw)
        if pending:
            self._keep(pending)

    def _keep(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()[:MAX_LINE]
        if line:
            self._tail.append(line)
            log.info(line, extra={"server": self.label})

    async def wait(self) -> int:
        """Waits for it to exit (and its output to be read); returns the exit code (-N: killed by signal N)."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
        return code

    def signal_group(self, sig: signal.Signals) -> None:
        """Signals its whole process group (vLLM's engine and worker processes included), if any is left."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM to the group, SIGKILL after `grace` seconds; returns the exit code."""
        if self._proc is None:
            return None
        self.signal_group(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self._proc.wait(), grace)
        except TimeoutError:
            log.warning("model server ignored SIGTERM; killing it", extra={"server": self.label, "pid": self.pid})
            self.signal_group(signal.SIGKILL)
            code = await self._proc.wait()
        # Whatever is left of the group (engine processes that outlived their parent) goes too.
        self.signal_group(signal.SIGKILL)
        if self._reader is not None:
            self._reader.cancel()
        return code
