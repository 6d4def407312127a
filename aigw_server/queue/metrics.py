"""Prometheus metrics of the queue, read from the in-memory view at scrape time (nothing on the request path)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aigw_server.queue.jobs_engine import JobEngine
from aigw_server.queue.stats import percentiles


class QueueCollector(Collector):
    """Per-model gauges (processing, waiting, utilization, limits, latency percentiles) and counters."""

    def __init__(self, engine: JobEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        labels = ["model"]
        gauges = {
            name: GaugeMetricFamily(f"aigw_queue_{name}", doc, labels=labels)
            for name, doc in (
                ("processing", "Jobs running now"),
                ("waiting", "Jobs queued now"),
                ("utilization", "processing / max_concurrent"),
                ("max_concurrent", "Configured running limit"),
                ("max_waiting", "Configured waiting limit"),
            )
        }
        latency = GaugeMetricFamily(
            "aigw_queue_recent_latency_ms",
            "Percentiles of recent jobs' queue wait and service time",
            labels=["model", "phase", "quantile"],
        )
        finished = CounterMetricFamily("aigw_queue_jobs_finished", "Jobs finished, by final state", labels=["model", "state"])
        failures = CounterMetricFamily("aigw_queue_job_failures", "Failed jobs by error code", labels=["model", "code"])
        admitted = CounterMetricFamily("aigw_queue_jobs_submitted", "Jobs admitted since the process started", labels=labels)
        rejected = CounterMetricFamily("aigw_queue_jobs_rejected", "Submits refused because the model was full", labels=labels)
        for model in sorted(self.engine.models()):
            s = self.engine.queue_stats(model)
            limit = s.settings.max_concurrent
            for name, value in (
                ("processing", s.processing),
                ("waiting", s.waiting),
                ("utilization", s.processing / limit if limit else 0.0),
                ("max_concurrent", limit),
                ("max_waiting", s.settings.max_waiting),
            ):
                gauges[name].add_metric([model], value)
            for phase, samples in (("queue_wait", s.stats.waits_ms), ("service", s.stats.services_ms)):
                p = percentiles(samples)
                for quantile, value in (("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99)):
                    latency.add_metric([model, phase, quantile], value)
            for state, count in (("succeeded", s.stats.succeeded), ("failed", s.stats.failed), ("cancelled", s.stats.cancelled)):
                finished.add_metric([model, state], count)
            for code, count in sorted(s.stats.failures.items()):
                failures.add_metric([model, code], count)
            admitted.add_metric([model], s.stats.submitted)
            rejected.add_metric([model], s.stats.rejected)
        yield from gauges.values()
        yield from (latency, finished, failures, admitted, rejected)


def register(collector: QueueCollector) -> bool:
    """Adds the collector to the process registry (served on the metrics side port); False if one is there."""
    try:
        REGISTRY.register(collector)
    except ValueError:
        return False
    return True


def unregister(collector: QueueCollector) -> None:
    REGISTRY.unregister(collector)
