"""The bounded pool of worker threads that runs blocking page work off the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client import Gauge

T = TypeVar("T")

BUSY = Gauge("aigw_ocr_workers_busy", "OCR worker threads running page work now")


class WorkerPool:
    """Threads for decoding, rendering and the engine subprocess; `size` bounds how much runs at once.

    Tesseract runs as a subprocess, so a thread waiting on it holds no GIL: `size` threads keep `size` cores busy.
    Callers queue work in FIFO order; each document keeps at most `size` pages queued, so documents interleave.
    """

    def __init__(self, workers: int = 0) -> None:
        self.size = workers if workers > 0 else (os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="ocr-worker")
        self._lock = threading.Lock()
        self.busy = 0
        self.peak = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Runs `fn(*args)` on a worker; cancelling the caller drops the work if it has not started."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._counted, fn, args)

    def _counted(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        with self._lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        BUSY.inc()
        try:
            return fn(*args)
        finally:
            BUSY.dec()
            with self._lock:
                self.busy -= 1

    def close(self) -> None:
        """Drops queued work and lets running work finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)
