"""Reads the few vLLM Prometheus metrics that routing needs from a /metrics text exposition."""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = -1.0

# Exposed names (counters carry `_total`); older vLLM releases used the gpu_* spellings.
_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_HITS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits_total")
_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries_total")
_WANTED = frozenset(_RUNNING + _WAITING + _KV_USAGE + _HITS + _QUERIES)


@dataclass(frozen=True)
class ServerMetrics:
    """One scrape: -1 wherever the server does not export the value."""

    running: float = UNKNOWN
    waiting: float = UNKNOWN
    kv_cache_usage: float = UNKNOWN
    prefix_hits: float = UNKNOWN
    prefix_queries: float = UNKNOWN


NO_METRICS = ServerMetrics()


def _samples(text: str) -> dict[str, list[float]]:
    """Values of the wanted metrics, one per label set."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
        name = line[:end]
        if name not in _WANTED:
            continue
        rest = line[line.rfind("}") + 1 :] if line.startswith("{", end) else line[end:]
        fields = rest.split()
        if not fields:
            continue
        try:
            found.setdefault(name, []).append(float(fields[0]))
        except ValueError:
            continue
    return found


def _first(found: dict[str, list[float]], names: tuple[str, ...], combine: str) -> float:
    for name in names:
        values = found.get(name)
        if values:
            return max(values) if combine == "max" else sum(values)
    return UNKNOWN


def parse_vllm_metrics(text: str) -> ServerMetrics:
    """Sums counts over label sets (several engines, data parallel); KV-cache use is the fullest engine's."""
    found = _samples(text)
    return ServerMetrics(
        running=_first(found, _RUNNING, "sum"),
        waiting=_first(found, _WAITING, "sum"),
        kv_cache_usage=_first(found, _KV_USAGE, "max"),
        prefix_hits=_first(found, _HITS, "sum"),
        prefix_queries=_first(found, _QUERIES, "sum"),
    )


def prefix_hit_rate(previous: ServerMetrics, current: ServerMetrics, last_rate: float) -> float:
    """Hit rate over the last poll interval; with no new lookups the last rate stands (cumulative at first)."""
    if current.prefix_hits < 0 or current.prefix_queries <= 0:
        return UNKNOWN
    if previous.prefix_queries < 0 or current.prefix_queries < previous.prefix_queries:
        return current.prefix_hits / current.prefix_queries
    queries = current.prefix_queries - previous.prefix_queries
    if queries <= 0:
        return last_rate if last_rate >= 0 else current.prefix_hits / current.prefix_queries
    return max(0.0, min(1.0, (current.prefix_hits - previous.prefix_hits) / queries))
