"""Backend choice policies behind one interface: least loaded, prefix affinity, round robin (no I/O)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

AFFINITY_PREFIX_CHARS = 4096


class Candidate(Protocol):
    """A healthy backend holding the requested model, as a policy sees it."""

    @property
    def name(self) -> str: ...

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def server_waiting(self) -> int: ...

    @property
    def kv_cache_usage(self) -> float: ...

    @property
    def load(self) -> float: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True)
class Saturation:
    """EPP-style cut-offs: a backend is saturated when any of them is reached."""

    in_flight_ratio: float = 1.0
    kv_cache_usage: float = 0.95

    def reached(self, c: Candidate) -> bool:
        capacity = max(1, c.capacity)
        return (
            c.in_flight / capacity >= self.in_flight_ratio
            or (c.kv_cache_usage >= 0 and c.kv_cache_usage >= self.kv_cache_usage)
            or c.server_waiting >= capacity
        )


class RoutingPolicy(Protocol):
    """Chooses one of the candidates (never empty) for a request with the given affinity key."""

    def choose(self, candidates: Sequence[C], affinity_key: str) -> C: ...


class LeastLoaded:
    """The candidate with the least work relative to its capacity, preferring unsaturated ones.

    Ties go round robin, so equal backends share the work instead of the first one taking it all.
    """

    def __init__(self, saturation: Saturation) -> None:
        self.saturation = saturation
        self.turn = itertools.count()

    def choose(self, candidates: Sequence[C], affinity_key: str) -> C:
        pool = [c for c in candidates if not self.saturation.reached(c)] or list(candidates)
        best = min(c.load for c in pool)
        tied = sorted((c for c in pool if c.load == best), key=lambda c: (c.kv_cache_usage, c.name))
        return tied[next(self.turn) % len(tied)]


def _weight(key: str, name: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{name}".encode(), digest_size=8).digest()


class PrefixAffinity:
    """Requests of one conversation go to the same backend (its KV cache holds their prefix).

    Rendezvous hashing of the conversation's key over the candidates: the choice is stable while the
    backend stays healthy and moves only that backend's conversations when it leaves. When the chosen
    backend is saturated, or the request has no key, the least loaded candidate takes it.
    """

    def __init__(self, saturation: Saturation) -> None:
        self.saturation = saturation
        self.fallback = LeastLoaded(saturation)

    def choose(self, candidates: Sequence[C], affinity_key: str) -> C:
        if affinity_key:
            preferred = max(candidates, key=lambda c: _weight(affinity_key, c.name))
            if not self.saturation.reached(preferred):
                return preferred
        return self.fallback.choose(candidates, affinity_key)


class RoundRobin:
    """Each candidate in turn, load ignored: the baseline the others are measured against."""

    def __init__(self, saturation: Saturation) -> None:
        self.turn = itertools.count()

    def choose(self, candidates: Sequence[C], affinity_key: str) -> C:
        ordered = sorted(candidates, key=lambda c: c.name)
        return ordered[next(self.turn) % len(ordered)]


POLICIES: dict[str, type[LeastLoaded] | type[PrefixAffinity] | type[RoundRobin]] = {
    "least_loaded": LeastLoaded,
    "prefix_affinity": PrefixAffinity,
    "round_robin": RoundRobin,
}


def make_policy(name: str, saturation: Saturation) -> RoutingPolicy:
    """The policy `routing.policy` names."""
    return POLICIES[name](saturation)


def affinity_key(messages: Sequence[tuple[str, str]]) -> str:
    """The key of a conversation: its first two messages (the system prompt and the opening question).

    They stay the same on every later turn, so all turns of a conversation share the key, while
    conversations that open differently spread over the backends.
    """
    head = "\0".join(f"{role}\0{content}" for role, content in messages[:2])
    return head[:AFFINITY_PREFIX_CHARS]
