"""Dynamic model configuration: changes validated (ranges, kinds, the field at fault), then stored versioned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.auth import Principal
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import InvalidArgument, NotFound

MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_DEFAULT_TOKENS = 1_000_000


@dataclass(frozen=True)
class Range:
    """An inclusive range, or exclusive at the low end when `low_open`."""

    low: float
    high: float
    low_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"


PatchLimit = Literal["max_concurrent", "max_waiting", "timeout_seconds", "max_attempts"]
ParamLimit = Literal["max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty"]

LIMITS: dict[PatchLimit, Range] = {
    "max_concurrent": Range(1, 1000),
    "max_waiting": Range(0, 100_000),
    "timeout_seconds": Range(1, 86_400),
    "max_attempts": Range(1, 10),
}
PARAM_LIMITS: dict[ParamLimit, Range] = {
    "max_tokens": Range(1, MAX_DEFAULT_TOKENS),
    "temperature": Range(0, 2),
    "top_p": Range(0, 1, low_open=True),
    "presence_penalty": Range(-2, 2),
    "frequency_penalty": Range(-2, 2),
}


def required_version(expected_version: int | None) -> int:
    """The version a change is based on; a change without one is INVALID_ARGUMENT, not a version conflict."""
    if expected_version is None:
        raise InvalidArgument(
            "expected_version: required; send the version that GET /admin/models/{model}/config returned",
            field="expected_version",
        )
    return expected_version


def check_change(model_kind: str, expected_version: int, patch: queue_pb2.ModelConfigPatch) -> None:
    """Raises INVALID_ARGUMENT naming the first field that is out of range or does not fit the model's kind."""
    if expected_version < 0:
        raise InvalidArgument("expected_version: must be >= 0 (the version read from GET config)", field="expected_version")
    if not patch.ListFields():
        raise InvalidArgument("patch: names nothing to change", field="patch")
    for name, limit in LIMITS.items():
        if patch.HasField(name):
            _check_range(f"patch.{name}", getattr(patch, name), limit)
    if patch.HasField("default_params"):
        if model_kind != "chat":
            raise InvalidArgument(
                "patch.default_params: only chat models have generation parameters", field="patch.default_params"
            )
        _check_params(patch.default_params)
    if patch.default_resolution != common_pb2.RESOLUTION_UNSPECIFIED:
        _check_resolution(model_kind, patch.default_resolution)


def _check_params(params: common_pb2.GenerationParams) -> None:
    for name, limit in PARAM_LIMITS.items():
        if params.HasField(name):
            _check_range(f"patch.default_params.{name}", getattr(params, name), limit)
    if len(params.stop) > MAX_STOP_SEQUENCES:
        raise InvalidArgument(
            f"patch.default_params.stop: at most {MAX_STOP_SEQUENCES} sequences", field="patch.default_params.stop"
        )
    for stop in params.stop:
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidArgument(
                f"patch.default_params.stop: each sequence has 1 to {MAX_STOP_CHARS} characters",
                field="patch.default_params.stop",
            )


def _check_resolution(model_kind: str, value: int) -> None:
    field = "patch.default_resolution"
    if model_kind != "ocr":
        raise InvalidArgument(f"{field}: only OCR models have a resolution", field=field)
    if value not in common_pb2.Resolution.values():
        raise InvalidArgument(f"{field}: {value} is not a resolution mode", field=field)


def _check_range(field: str, value: float, limit: Range) -> None:
    if value != value or not limit.holds(value):
        raise InvalidArgument(f"{field}: {_num(value)} is outside {limit.describe()}", field=field)


def _num(value: float) -> str:
    return f"{value:g}"


class ConfigStore(Protocol):
    """Persisted, versioned model configuration (the queue's ModelConfigService)."""

    async def get_model_config(self, model: str) -> queue_pb2.ModelConfig:
        """The current configuration."""

    async def update_model_config(
        self, model: str, expected_version: int, patch: queue_pb2.ModelConfigPatch, updated_by: str
    ) -> queue_pb2.ModelConfig:
        """Applies a change if `expected_version` is current, else Aborted."""


class ModelSettings:
    """Reads and changes models' dynamic configuration: validated here, versioned and persisted by the store."""

    def __init__(self, cfg: GatewayConfig, store: ConfigStore) -> None:
        self.cfg = cfg
        self.store = store

    async def get(self, model: str) -> queue_pb2.ModelConfig:
        self._kind(model)
        return await self.store.get_model_config(model)

    async def update(
        self, actor: Principal, model: str, expected_version: int | None, patch: queue_pb2.ModelConfigPatch
    ) -> queue_pb2.ModelConfig:
        """Validates and applies a change (None: the client sent no version), recording the admin's subject as its author."""
        check_change(self._kind(model), expected_version or 0, patch)
        version = required_version(expected_version)  # after the patch's own checks, so those name their field
        return await self.store.update_model_config(model, version, patch, actor.subject)

    def _kind(self, model: str) -> str:
        if not model:
            raise InvalidArgument("model: required", field="model")
        if model not in self.cfg.models:
            raise NotFound(f"no model named {model!r}")
        return self.cfg.models[model].kind
