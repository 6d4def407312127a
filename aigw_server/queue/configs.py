"""Dynamic per-model configuration: versioned, persisted, applied at once; every change kept with who made it.

A change is stored as an insert of `{_id: "<model>/<version>"}`: the version number is the unique
key, so of two changes based on the same version exactly one is stored and the other is ABORTED,
on FerretDB as on MongoDB. The current settings are the latest version's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bson.binary import Binary

from aigw_server.queue.model_settings import ModelSettings, Patch, apply_patch, settings_from_config
from aigw_server.queue.store import CONFIG_CHANGES, Duplicate, QueueStore
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.config import GatewayConfig
from aigw_server.runtime.errors import Aborted, InvalidArgument, NotFound

Doc = dict[str, Any]
MAX_CHANGES_PAGE = 500
DEFAULT_CHANGES_PAGE = 50


def change_document(s: ModelSettings) -> Doc:
    return {
        "_id": f"{s.model}/{s.version:010d}",
        "model": s.model,
        "version": s.version,
        "max_concurrent": s.max_concurrent,
        "max_waiting": s.max_waiting,
        "timeout_seconds": s.timeout_seconds,
        "max_attempts": s.max_attempts,
        "enabled": s.enabled,
        "default_params": Binary(s.default_params),
        "default_resolution": s.default_resolution,
        "updated_by": s.updated_by,
        "updated_at": to_datetime(s.updated_at),
    }


def settings_from_document(doc: Doc, kind: str) -> ModelSettings:
    return ModelSettings(
        model=doc["model"],
        kind=kind,
        version=int(doc["version"]),
        max_concurrent=int(doc["max_concurrent"]),
        max_waiting=int(doc["max_waiting"]),
        timeout_seconds=float(doc["timeout_seconds"]),
        max_attempts=int(doc["max_attempts"]),
        enabled=bool(doc["enabled"]),
        default_params=bytes(doc.get("default_params") or b""),
        default_resolution=int(doc.get("default_resolution", 0)),
        updated_by=doc.get("updated_by", ""),
        updated_at=from_datetime(doc.get("updated_at")),
    )


class ModelConfigs:
    """The settings in force for every configured model."""

    def __init__(
        self, cfg: GatewayConfig, store: QueueStore, clock: Callable[[], float], on_change: Callable[[str], None]
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_change = on_change
        self.settings = {name: settings_from_config(cfg, name) for name in cfg.models}
        self._locks = {name: asyncio.Lock() for name in cfg.models}

    def get(self, model: str) -> ModelSettings:
        try:
            return self.settings[model]
        except KeyError:
            raise NotFound(f"model {model!r} is not configured") from None

    def all(self) -> list[ModelSettings]:
        """Every configured model's settings, by model name."""
        return [s for _, s in sorted(self.settings.items())]

    async def load(self) -> None:
        """Takes the latest stored version of every configured model."""
        latest: dict[str, Doc] = {}
        for doc in await self.store.find(CONFIG_CHANGES, {}):
            model = doc.get("model", "")
            if model in self.settings and int(doc["version"]) > int(latest.get(model, {}).get("version", 0)):
                latest[model] = doc
        for model, doc in latest.items():
            self.settings[model] = settings_from_document(doc, self.settings[model].kind)

    async def update(self, model: str, expected_version: int, patch: Patch, updated_by: str) -> ModelSettings:
        """Stores the next version if `expected_version` is current; ABORTED otherwise."""
        if expected_version < 0:
            raise InvalidArgument("expected_version: must be >= 0", field="expected_version")
        async with self._locks.get(model) or asyncio.Lock():
            current = self.get(model)
            if expected_version != current.version:
                raise Aborted(f"model {model!r} is at version {current.version}, not {expected_version}; read it again")
            updated = apply_patch(current, patch, updated_by, self.clock())
            try:
                await self.store.insert(CONFIG_CHANGES, change_document(updated))
            except Duplicate:
                raise Aborted(f"model {model!r} was changed concurrently; read it again") from None
            self.settings[model] = updated
        self.on_change(model)
        return updated

    async def changes(self, model: str, limit: int) -> list[ModelSettings]:
        """Stored versions of a model, newest first."""
        current = self.get(model)
        size = min(MAX_CHANGES_PAGE, limit if limit > 0 else DEFAULT_CHANGES_PAGE)
        docs = await self.store.find(CONFIG_CHANGES, {"model": model}, sort=[("version", -1)], limit=size)
        return [settings_from_document(d, current.kind) for d in docs]
