"""The auto-switcher's loop: gathers usage, queues and backend states, asks the rule, carries out and records its decisions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin import autoswitch
from aigw_server.admin.autoswitch import BackendView, Decision, Demand, Settings, UsageCount
from aigw_server.admin.fleet import BackendSnapshot, Fleet
from aigw_server.runtime.config import AutoSwitchConfig
from aigw_server.runtime.errors import GatewayError

log = logging.getLogger(__name__)

SEED_DECISIONS = 200


class SwitchRecords(Protocol):
    """The persisted on/off switch and decision log (the queue's AutoSwitchStoreService)."""

    async def auto_switch_enabled(self) -> bool | None:
        """The runtime setting; None when never set."""

    async def set_auto_switch_enabled(self, enabled: bool, updated_by: str) -> None:
        """Persists the runtime setting."""

    async def record_decision(self, decision: queue_pb2.SwitchDecision) -> queue_pb2.SwitchDecision:
        """Stores a decision."""

    async def recent_decisions(self, limit: int) -> list[queue_pb2.SwitchDecision]:
        """Decisions, newest first."""


class DemandInputs(Protocol):
    """Usage and live queue depth (the queue's QueueService)."""

    async def usage(self, window_days: int) -> list[UsageCount]:
        """Request counts by model and hour of week over the window."""

    async def queued(self, model: str) -> int:
        """Requests waiting in a model's queue now."""


@dataclass(frozen=True)
class Assessment:
    """The inputs the rule saw and what it decided."""

    at: datetime
    demand: dict[str, Demand]
    decisions: list[Decision]


def backend_view(snapshot: BackendSnapshot) -> BackendView:
    """The planner's view of a backend snapshot."""
    status = snapshot.status
    state = "unreachable" if status is None else common_pb2.BackendState.Name(status.state).removeprefix("BACKEND_STATE_").lower()
    return BackendView(
        name=snapshot.config.name,
        models=snapshot.config.models,
        loaded=snapshot.loaded,
        in_flight=status.in_flight if status else 0,
        state=state,
        switchable=snapshot.config.switchable,
    )


class AutoSwitcher:
    """Runs the auto-switch rule every `interval_seconds` while enabled (runtime setting, else config)."""

    def __init__(
        self,
        cfg: AutoSwitchConfig,
        fleet: Fleet,
        records: SwitchRecords,
        inputs: DemandInputs,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        self.settings = Settings(cfg.pattern_window_days, cfg.cooldown_seconds, cfg.demand_margin)
        self.fleet = fleet
        self.records = records
        self.inputs = inputs
        self.clock = clock
        self.last_switch: dict[str, datetime] = {}
        self._seeded = False
        self._last_recorded: dict[str, tuple[str, str, str]] = {}
        self._cycle = asyncio.Lock()

    async def enabled(self) -> bool:
        setting = await self.records.auto_switch_enabled()
        return self.cfg.enabled if setting is None else setting

    async def set_enabled(self, enabled: bool, updated_by: str) -> bool:
        await self.records.set_auto_switch_enabled(enabled, updated_by)
        log.info("auto-switch %s", "enabled" if enabled else "disabled", extra={"updated_by": updated_by})
        return enabled

    async def assess(self) -> Assessment:
        """What the rule decides now, without acting."""
        snapshots = await self.fleet.snapshot()
        switchable = [s for s in snapshots if s.config.switchable]
        models = list(dict.fromkeys(m for s in switchable for m in s.config.models))
        usage, queued, last = await asyncio.gather(
            self.inputs.usage(self.settings.window_days),
            asyncio.gather(*(self.inputs.queued(m) for m in models)),
            self._last_switches(),
        )
        now = self.clock()
        demand = autoswitch.estimate_demand(usage, dict(zip(models, queued, strict=True)), models, now, self.settings.window_days)
        views = [backend_view(s) for s in snapshots]
        return Assessment(now, demand, autoswitch.plan(views, demand, last, now, self.settings))

    async def run_cycle(self) -> list[Decision]:
        """Assesses, carries out the switches, records what changed; returns the decisions as carried out."""
        async with self._cycle:
            assessment = await self.assess()
            done = [await self._carry_out(d) if d.action == autoswitch.SWITCH else d for d in assessment.decisions]
            for decision in done:
                await self._record(decision)
            return done

    async def run(self) -> None:
        """The background loop; a failing cycle is logged and the loop goes on."""
        while True:
            try:
                if await self.enabled():
                    await self.run_cycle()
            except GatewayError as exc:
                log.warning("auto-switch cycle failed: %s", exc.message)
            except Exception:  # the loop must outlive any one cycle's surprise; the stack goes to the log
                log.exception("auto-switch cycle failed")
            await asyncio.sleep(self.cfg.interval_seconds)

    async def _carry_out(self, decision: Decision) -> Decision:
        self.last_switch[decision.backend] = self.clock()
        try:
            if decision.from_model:
                result = await self.fleet.switch_backend(decision.backend, decision.to_model)
                outcome, elapsed = result.outcome, result.elapsed_ms
            else:
                started = await self.fleet.start_model(decision.to_model, decision.backend)
                outcome, elapsed = started.outcome, started.elapsed_ms
        except GatewayError as exc:
            log.warning("auto-switch of %s to %s failed: %s", decision.backend, decision.to_model, exc.message)
            return Decision(
                decision.backend,
                decision.from_model,
                decision.to_model,
                autoswitch.FAILED,
                f"{decision.reason}; the switch failed: {exc.message}",
                decision.scores,
            )
        log.info("auto-switched %s from %r to %r", decision.backend, decision.from_model, decision.to_model)
        reason = f"{decision.reason}; {outcome} in {elapsed:.0f} ms"
        return Decision(decision.backend, decision.from_model, decision.to_model, decision.action, reason, decision.scores)

    async def _record(self, decision: Decision) -> None:
        """Stores switches and failures always, other decisions when they differ from the backend's last one."""
        key = (decision.action, decision.from_model, decision.to_model)
        if decision.action not in (autoswitch.SWITCH, autoswitch.FAILED) and self._last_recorded.get(decision.backend) == key:
            return
        record = queue_pb2.SwitchDecision(
            backend=decision.backend,
            from_model=decision.from_model,
            to_model=decision.to_model,
            action=decision.action,
            reason=decision.reason,
            scores=dict(decision.scores),
        )
        record.at.FromDatetime(self.clock())
        await self.records.record_decision(record)
        self._last_recorded[decision.backend] = key

    async def _last_switches(self) -> dict[str, datetime]:
        """When each backend last switched (or tried to), seeded once from the stored decisions."""
        if not self._seeded:
            for d in await self.records.recent_decisions(SEED_DECISIONS):
                if d.action in (autoswitch.SWITCH, autoswitch.FAILED):
                    self.last_switch.setdefault(d.backend, d.at.ToDatetime(tzinfo=UTC))
            self._seeded = True
        return dict(self.last_switch)
