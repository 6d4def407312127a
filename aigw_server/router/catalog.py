"""The models the router serves: the static config merged with the queue's dynamic per-model config."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from aigw_server.runtime.config import ModelConfig
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

ModelKind = Literal["chat", "ocr"]
KIND_NAMES = {"chat": "chat", "ocr": "OCR"}
WITH_ARTICLE = {"chat": "a chat", "ocr": "an OCR"}


@dataclass(frozen=True)
class SamplingParams:
    """Generation parameters; None means unset (the model's default applies)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def over(self, defaults: SamplingParams) -> SamplingParams:
        """These parameters, with unset ones taken from `defaults`."""
        return SamplingParams(
            max_tokens=self.max_tokens if self.max_tokens is not None else defaults.max_tokens,
            temperature=self.temperature if self.temperature is not None else defaults.temperature,
            top_p=self.top_p if self.top_p is not None else defaults.top_p,
            stop=self.stop or defaults.stop,
            seed=self.seed if self.seed is not None else defaults.seed,
            presence_penalty=self.presence_penalty if self.presence_penalty is not None else defaults.presence_penalty,
            frequency_penalty=self.frequency_penalty if self.frequency_penalty is not None else defaults.frequency_penalty,
        )


@dataclass(frozen=True)
class DynamicModel:
    """The part of a model's config that operators change at runtime (ModelConfigService)."""

    enabled: bool
    version: int = 0
    timeout_seconds: float = 0.0
    default_params: SamplingParams = SamplingParams()
    default_resolution: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True)
class ModelEntry:
    """One servable model as the router sees it now."""

    name: str
    kind: ModelKind
    enabled: bool
    defaults: SamplingParams
    default_resolution: str
    created: int
    version: int = 0
    timeout_seconds: float = 0.0


@dataclass
class ModelCatalog:
    """Resolves model names for requests; `update` applies the queue's dynamic config without a restart."""

    static: Mapping[str, ModelConfig]
    started: int = field(default_factory=lambda: int(time.time()))
    entries: dict[str, ModelEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = {name: self._entry(name, m, None) for name, m in self.static.items()}

    def _entry(self, name: str, model: ModelConfig, dynamic: DynamicModel | None) -> ModelEntry:
        base = ModelEntry(
            name=name,
            kind=model.kind,
            enabled=model.enabled,
            defaults=SamplingParams(max_tokens=model.default_max_tokens),
            default_resolution=model.default_resolution,
            created=self.started,
        )
        if dynamic is None:
            return base
        return replace(
            base,
            enabled=dynamic.enabled,
            defaults=dynamic.default_params.over(base.defaults),
            default_resolution=dynamic.default_resolution or base.default_resolution,
            created=int(dynamic.updated_at) or base.created,
            version=dynamic.version,
            timeout_seconds=dynamic.timeout_seconds,
        )

    def update(self, dynamic: Mapping[str, DynamicModel]) -> None:
        """Applies the dynamic config of every model it names (models not in the static config are ignored)."""
        self.entries = {name: self._entry(name, m, dynamic.get(name)) for name, m in self.static.items()}

    def default_model(self, kind: ModelKind) -> str:
        """The first enabled model of `kind` in config order."""
        for entry in self.entries.values():
            if entry.kind == kind and entry.enabled:
                return entry.name
        raise FailedPrecondition(f"no {KIND_NAMES[kind]} model is enabled")

    def resolve(self, name: str, kind: ModelKind) -> ModelEntry:
        """The model a request names (or the default one): NOT_FOUND when unknown, FAILED_PRECONDITION when disabled."""
        entry = self.entries.get(name or self.default_model(kind))
        if entry is None:
            raise NotFound(f"model {name!r} does not exist")
        if entry.kind != kind:
            raise InvalidArgument(
                f"model {name!r} is {WITH_ARTICLE[entry.kind]} model, not {WITH_ARTICLE[kind]} model", field="model"
            )
        if not entry.enabled:
            raise FailedPrecondition(f"model {name!r} is disabled")
        return entry

    def enabled(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.enabled]
