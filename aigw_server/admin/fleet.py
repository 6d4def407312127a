"""Models and backends: who holds what, and starting, stopping and switching models through the backends' lifecycle RPCs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.config import BackendConfig, GatewayConfig
from aigw_server.runtime.errors import FailedPrecondition, GatewayError, InvalidArgument, NotFound, Unavailable

UNREACHABLE = "UNREACHABLE"
SERIES_MINUTES = 60
"""The longest queue series the queue keeps, in minutes."""
BUSY = frozenset({common_pb2.BACKEND_STATE_LOADING, common_pb2.BACKEND_STATE_DRAINING, common_pb2.BACKEND_STATE_CRASHED})


@dataclass(frozen=True)
class LifecycleResult:
    """What a backend answered to a load, unload or switch."""

    status: common_pb2.BackendStatus
    outcome: str
    elapsed_ms: float


class BackendControl(Protocol):
    """One backend's status and lifecycle RPCs; failures arrive as domain errors."""

    async def status(self) -> common_pb2.BackendStatus:
        """The live status, or Unavailable."""

    async def health(self) -> str:
        """ "SERVING", "NOT_SERVING" or "UNREACHABLE"."""

    async def load(self, model: str) -> LifecycleResult:
        """Loads a model."""

    async def unload(self, model: str, force: bool) -> LifecycleResult:
        """Unloads a model after draining (or regardless, with force)."""

    async def switch(self, model: str, force: bool) -> LifecycleResult:
        """Replaces the loaded model."""

    async def sleep(self, level: int) -> LifecycleResult:
        """Puts the loaded models to sleep (FailedPrecondition where the backend has no sleep mode)."""

    async def wake(self) -> LifecycleResult:
        """Wakes the sleeping models (FailedPrecondition where the backend has no sleep mode)."""


class QueueNumbers(Protocol):
    """The queue service's numbers about models."""

    async def queue_stats(self, model: str) -> queue_pb2.GetQueueStatsResponse:
        """A model's queue metrics."""

    async def queue_series(self, model: str, minutes: int | None) -> queue_pb2.GetQueueSeriesResponse:
        """A model's last `minutes` (None: the queue's default) in one-minute buckets."""

    async def model_configs(self) -> list[queue_pb2.ModelConfig]:
        """Every model's dynamic configuration."""


@dataclass(frozen=True)
class BackendSnapshot:
    """A backend's configuration and its live status (None when unreachable)."""

    config: BackendConfig
    status: common_pb2.BackendStatus | None
    health: str

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self.status.loaded_models) if self.status else ()

    @property
    def has_room(self) -> bool:
        return self.status is not None and self.status.state not in BUSY and len(self.loaded) < max(1, self.config.max_models)

    @property
    def load_ratio(self) -> float:
        if self.status is None:
            return float("inf")
        return self.status.in_flight / max(1, self.status.capacity or self.config.capacity)


@dataclass(frozen=True)
class ModelView:
    """A model as operators see it."""

    model: str
    kind: str
    enabled: bool
    loaded_on: tuple[str, ...]
    backends: tuple[str, ...]
    queue: queue_pb2.GetQueueStatsResponse | None

    @property
    def state(self) -> str:
        return "loaded" if self.loaded_on else "stopped"


@dataclass(frozen=True)
class StartResult:
    """The answer to a start."""

    outcome: str
    backend: str
    elapsed_ms: float
    status: common_pb2.BackendStatus | None


@dataclass(frozen=True)
class StopResult:
    """The answer to a stop."""

    outcome: str
    backends: tuple[str, ...]
    elapsed_ms: float


class Fleet:
    """The configured backends and models, with live status from the backends and the queue."""

    def __init__(self, cfg: GatewayConfig, controls: Mapping[str, BackendControl], queue: QueueNumbers) -> None:
        self.cfg = cfg
        self.controls = controls
        self.queue = queue

    async def snapshot(self) -> list[BackendSnapshot]:
        """Every backend's live status, fetched concurrently."""
        return list(await asyncio.gather(*(self._snapshot(b) for b in self.cfg.backends)))

    async def models(self) -> tuple[list[ModelView], list[BackendSnapshot]]:
        """Every configured model with where it is loaded and its queue numbers, and every backend."""
        names = list(self.cfg.models)
        backends, stats, enabled = await asyncio.gather(
            self.snapshot(), asyncio.gather(*(self._stats(m) for m in names)), self._enabled()
        )
        views = [
            ModelView(
                model=name,
                kind=self.cfg.models[name].kind,
                enabled=enabled.get(name, self.cfg.models[name].enabled),
                loaded_on=tuple(s.config.name for s in backends if name in s.loaded),
                backends=tuple(b.name for b in self.cfg.backends if name in b.models),
                queue=stat,
            )
            for name, stat in zip(names, stats, strict=True)
        ]
        return views, backends

    async def queue_stats(self, model: str) -> queue_pb2.GetQueueStatsResponse:
        """A configured model's queue metrics."""
        self._check_model(model)
        return await self.queue.queue_stats(model)

    async def queue_series(self, model: str, minutes: int | None) -> queue_pb2.GetQueueSeriesResponse:
        """A configured model's queue over its last `minutes` (1 to 60; None for all 60)."""
        self._check_model(model)
        if minutes is not None and not 1 <= minutes <= SERIES_MINUTES:
            raise InvalidArgument(f"minutes: between 1 and {SERIES_MINUTES}, not {minutes}", field="minutes")
        return await self.queue.queue_series(model, minutes)

    async def start_model(self, model: str, backend: str = "") -> StartResult:
        """Loads `model` on `backend`, or on the least busy backend able to hold it and with room for it."""
        self._check_model(model)
        candidates = [self._backend_for(backend, model)] if backend else [b for b in self.cfg.backends if model in b.models]
        if not candidates:
            raise FailedPrecondition(f"no backend is configured to hold {model!r}")
        snapshots = await asyncio.gather(*(self._snapshot(b) for b in candidates))
        holder = next((s for s in snapshots if model in s.loaded), None)
        if holder is not None:
            return StartResult(f"already loaded on {holder.config.name}", holder.config.name, 0.0, holder.status)
        chosen = self._choose(snapshots, model)
        start = time.perf_counter()
        result = await self.controls[chosen.config.name].load(model)
        elapsed = (time.perf_counter() - start) * 1000
        return StartResult(result.outcome or "loaded", chosen.config.name, elapsed, result.status)

    async def stop_model(self, model: str, force: bool = False) -> StopResult:
        """Unloads `model` from every backend holding it."""
        self._check_model(model)
        snapshots = await self.snapshot()
        holders = [s.config.name for s in snapshots if model in s.loaded]
        if not holders:
            return StopResult("not loaded; nothing to do", (), 0.0)
        # Checked before anything is unloaded: a stop that fails half-way would leave the model stopped on
        # some backends while the operator is told it failed.
        attached = [s.config.name for s in snapshots if model in s.loaded and s.config.mode == "attach"]
        if attached:
            raise FailedPrecondition(
                f"{model!r} is also served by {', '.join(attached)}, attached to a model server the gateway does not "
                "manage; stop it there or take the backend out of the config; nothing was unloaded"
            )
        start = time.perf_counter()
        await asyncio.gather(*(self.controls[name].unload(model, force) for name in holders))
        elapsed = (time.perf_counter() - start) * 1000
        return StopResult(f"unloaded from {', '.join(holders)}", tuple(holders), elapsed)

    async def switch_backend(self, backend: str, model: str, force: bool = False) -> LifecycleResult:
        """Makes `backend` hold `model` instead of what it holds now."""
        self._check_model(model)
        self._backend_for(backend, model)
        start = time.perf_counter()
        result = await self.controls[backend].switch(model, force)
        return LifecycleResult(result.status, result.outcome or "switched", (time.perf_counter() - start) * 1000)

    async def sleep_backend(self, backend: str, level: int) -> LifecycleResult:
        """Puts `backend`'s models to sleep at `level` (1 offloads weights, 2 discards them; 0 means 1)."""
        self._backend(backend)
        if level not in (0, 1, 2):
            raise InvalidArgument(f"level: must be 1 or 2 (0 means 1), got {level}", field="level")
        start = time.perf_counter()
        result = await self.controls[backend].sleep(level or 1)
        return LifecycleResult(result.status, result.outcome or "asleep", (time.perf_counter() - start) * 1000)

    async def wake_backend(self, backend: str) -> LifecycleResult:
        """Wakes `backend`'s sleeping models."""
        self._backend(backend)
        start = time.perf_counter()
        result = await self.controls[backend].wake()
        return LifecycleResult(result.status, result.outcome or "woken", (time.perf_counter() - start) * 1000)

    def _check_model(self, model: str) -> None:
        if not model:
            raise InvalidArgument("model: required", field="model")
        if model not in self.cfg.models:
            raise NotFound(f"no model named {model!r}")

    def _backend(self, backend: str) -> BackendConfig:
        if not backend:
            raise InvalidArgument("backend: required", field="backend")
        found = next((b for b in self.cfg.backends if b.name == backend), None)
        if found is None:
            raise NotFound(f"no backend named {backend!r}")
        return found

    def _backend_for(self, backend: str, model: str) -> BackendConfig:
        found = self._backend(backend)
        if model not in found.models:
            raise InvalidArgument(
                f"backend: {backend!r} cannot hold {model!r} (it holds {', '.join(found.models)})", field="backend"
            )
        return found

    @staticmethod
    def _choose(snapshots: list[BackendSnapshot], model: str) -> BackendSnapshot:
        reachable = [s for s in snapshots if s.status is not None]
        if not reachable:
            raise Unavailable(f"no backend able to hold {model!r} is reachable")
        with_room = [s for s in reachable if s.has_room]
        if not with_room:
            busy = ", ".join(
                f"{s.config.name} ({', '.join(s.loaded) or common_pb2.BackendState.Name(s.status.state)})"
                for s in reachable
                if s.status
            )
            raise FailedPrecondition(f"no backend has room for {model!r}: {busy}; use SwitchBackend to replace a model")
        return min(with_room, key=lambda s: s.load_ratio)

    async def _snapshot(self, backend: BackendConfig) -> BackendSnapshot:
        control = self.controls[backend.name]
        try:
            status, health = await asyncio.gather(control.status(), control.health())
        except GatewayError:
            return BackendSnapshot(backend, None, UNREACHABLE)
        return BackendSnapshot(backend, status, health)

    async def _stats(self, model: str) -> queue_pb2.GetQueueStatsResponse | None:
        try:
            return await self.queue.queue_stats(model)
        except GatewayError:
            return None

    async def _enabled(self) -> dict[str, bool]:
        try:
            return {c.model: c.enabled for c in await self.queue.model_configs()}
        except GatewayError:
            return {}
