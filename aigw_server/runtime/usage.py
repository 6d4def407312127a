"""Usage statistics as the queue reports them: request counts by model and hour of the week."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UsageCount:
    """Requests of one model in one hour of the week (0 = Monday 00:00 UTC) over the window."""

    model: str
    hour_of_week: int
    count: int
