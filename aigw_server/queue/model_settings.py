"""Per-model settings (config file defaults overlaid by versioned runtime changes) and the admission rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.enums import RESOLUTION_BY_WORD, RESOLUTION_WORDS
from aigw_server.runtime.errors import InvalidArgument

MAX_CONCURRENT = (1, 1000)
MAX_WAITING = (0, 100_000)
TIMEOUT_SECONDS = (1.0, 86_400.0)
MAX_ATTEMPTS = (1, 10)
RETRY_AFTER_BOUNDS = (0.1, 60.0)
DEFAULT_SERVICE_SECONDS = 1.0
# What a job running past the median service time is still expected to need, as a share of the median.
OVERDUE_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """The configuration of one model in force now; version 0 is the config file's."""

    model: str
    kind: str
    version: int
    max_concurrent: int
    max_waiting: int
    timeout_seconds: float
    max_attempts: int
    enabled: bool
    default_params: bytes = b""
    default_resolution: int = 0
    updated_by: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Patch:
    """A change to a model's settings; None leaves a field as it is."""

    max_concurrent: int | None = None
    max_waiting: int | None = None
    timeout_seconds: float | None = None
    max_attempts: int | None = None
    default_params: bytes | None = None
    default_resolution: int | None = None
    enabled: bool | None = None

    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


def settings_from_config(cfg: GatewayConfig, model: str) -> ModelSettings:
    """Version 0 of a model's settings: the config file, with the queue section's defaults."""
    m = cfg.models[model]
    return ModelSettings(
        model=model,
        kind=m.kind,
        version=0,
        max_concurrent=m.max_concurrent,
        max_waiting=cfg.queue.max_waiting if m.max_waiting is None else m.max_waiting,
        timeout_seconds=cfg.queue.timeout if m.timeout is None else m.timeout,
        max_attempts=cfg.queue.max_attempts if m.max_attempts is None else m.max_attempts,
        enabled=m.enabled,
        default_resolution=RESOLUTION_BY_WORD.get(m.default_resolution, 0) if m.kind == "ocr" else 0,
    )


def _check(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if value != value or not low <= value <= high:
        raise InvalidArgument(f"patch.{name}: {value:g} is outside [{low:g}, {high:g}]", field=f"patch.{name}")


def apply_patch(current: ModelSettings, patch: Patch, updated_by: str, now: float) -> ModelSettings:
    """The next version of the settings, or InvalidArgument naming the first bad field (nothing changes)."""
    if patch.empty():
        raise InvalidArgument("patch: names nothing to change", field="patch")
    for name, bounds in (
        ("max_concurrent", MAX_CONCURRENT),
        ("max_waiting", MAX_WAITING),
        ("timeout_seconds", TIMEOUT_SECONDS),
        ("max_attempts", MAX_ATTEMPTS),
    ):
        value = getattr(patch, name)
        if value is not None:
            _check(name, value, bounds)
    if patch.default_params is not None and current.kind != "chat":
        raise InvalidArgument("patch.default_params: only chat models have generation parameters", field="patch.default_params")
    if patch.default_resolution is not None:
        if current.kind != "ocr":
            raise InvalidArgument("patch.default_resolution: only OCR models have a resolution", field="patch.default_resolution")
        if patch.default_resolution not in RESOLUTION_WORDS:
            raise InvalidArgument(f"patch.default_resolution: {patch.default_resolution} is not a resolution mode")
    changes = {name: getattr(patch, name) for name in Patch.__slots__ if getattr(patch, name) is not None}
    return replace(current, **changes, version=current.version + 1, updated_by=updated_by, updated_at=now)


def admits(queued: int, running: int, settings: ModelSettings) -> bool:
    """Whether one more job fits: at most max_waiting wait beyond the running slots still free."""
    free_slots = max(0, settings.max_concurrent - running)
    return queued < settings.max_waiting + free_slots


def retry_after(queued: int, running_for: Sequence[float], settings: ModelSettings, service_seconds: float | None) -> float:
    """Seconds until a waiting place is likely free, from the measured service time and how long each running job has run.

    A running job is expected to need the median service time minus what it has run (an overdue one a
    quarter of the median); the slots that must free up are taken in the order they are expected to.
    """
    per_job = service_seconds if service_seconds and service_seconds > 0 else DEFAULT_SERVICE_SECONDS
    free = max(0, settings.max_concurrent - len(running_for))
    excess = max(1, queued - settings.max_waiting - free + 1)
    remaining = sorted(max(per_job * OVERDUE_SHARE, per_job - ran) for ran in running_for)
    if excess <= len(remaining):
        estimate = remaining[excess - 1]
    else:
        rounds = math.ceil((excess - len(remaining)) / settings.max_concurrent)
        estimate = (remaining[-1] if remaining else 0.0) + per_job * rounds
    low, high = RETRY_AFTER_BOUNDS
    return round(min(high, max(low, estimate)), 3)
