"""The auto-switcher's persistent state: its runtime on/off switch and its recorded decisions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aigw_server.queue.crashlog import page_size
from aigw_server.queue.store import DECISIONS, SETTINGS, QueueStore
from aigw_server.queue.times import from_datetime, to_datetime
from aigw_server.runtime.errors import InvalidArgument

Doc = dict[str, Any]
STATE_ID = "auto_switch"


@dataclass(frozen=True)
class SwitchState:
    """Whether auto-switching is on (None: never changed at runtime, the config decides)."""

    enabled: bool | None = None
    updated_by: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True)
class SwitchDecision:
    """One decision about one backend."""

    backend: str
    action: str
    from_model: str = ""
    to_model: str = ""
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    id: str = ""
    at: float = 0.0


def decision_document(d: SwitchDecision) -> Doc:
    return {
        "_id": d.id,
        "at": to_datetime(d.at),
        "backend": d.backend,
        "from_model": d.from_model,
        "to_model": d.to_model,
        "action": d.action,
        "reason": d.reason,
        "scores": [{"model": k, "score": float(v)} for k, v in d.scores.items()],
    }


def decision_from_document(doc: Doc) -> SwitchDecision:
    return SwitchDecision(
        backend=doc.get("backend", ""),
        action=doc.get("action", ""),
        from_model=doc.get("from_model", ""),
        to_model=doc.get("to_model", ""),
        reason=doc.get("reason", ""),
        scores={str(s["model"]): float(s["score"]) for s in doc.get("scores") or []},
        id=doc["_id"],
        at=from_datetime(doc.get("at")),
    )


class AutoSwitchRecords:
    """The switch state (cached; the queue is its only writer) and the decisions."""

    def __init__(self, store: QueueStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.state = SwitchState()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        doc = await self.store.find_one(SETTINGS, {"_id": STATE_ID})
        if doc is not None:
            self.state = SwitchState(bool(doc["enabled"]), doc.get("updated_by", ""), from_datetime(doc.get("updated_at")))

    async def set_state(self, enabled: bool, updated_by: str) -> SwitchState:
        async with self._lock:
            state = SwitchState(enabled, updated_by, self.clock())
            doc = {"_id": STATE_ID, "enabled": enabled, "updated_by": updated_by, "updated_at": to_datetime(state.updated_at)}
            await self.store.replace(SETTINGS, doc, upsert=True)
            self.state = state
        return state

    async def record(self, decision: SwitchDecision) -> SwitchDecision:
        if not decision.backend:
            raise InvalidArgument("decision.backend: required", field="decision.backend")
        if not decision.action or len(decision.action) > 32:
            raise InvalidArgument("decision.action: 1 to 32 characters (switch, stay, wait_idle, cooldown, failed)")
        stored = replace(
            decision, id=decision.id or uuid.uuid4().hex, at=decision.at or self.clock(), reason=decision.reason[:2000]
        )
        await self.store.insert(DECISIONS, decision_document(stored))
        return stored

    async def list(self, size: int) -> list[SwitchDecision]:
        docs = await self.store.find(DECISIONS, {}, sort=[("at", -1), ("_id", -1)], limit=page_size(size))
        return [decision_from_document(d) for d in docs]
