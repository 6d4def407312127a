"""Reading vLLM's Prometheus metrics (a sample written from the documented names) for routing."""

from __future__ import annotations

import pytest

from aigw_server.textgen.metrics import NO_METRICS, ServerMetrics, parse_vllm_metrics, prefix_hit_rate

VLLM_SAMPLE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3-8B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 4.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3-8B-Instruct"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3-8B-Instruct"} 0.17
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 1000.0
vllm:prefix_cache_queries_created{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 1.7e+09
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 250.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3-8B-Instruct"} 12.5
python_gc_objects_collected_total{generation="0"} 1234.0
"""

OLDER_SAMPLE = """\
vllm:num_requests_running{model_name="m"} 1.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:gpu_cache_usage_perc{model_name="m"} 0.9
"""


def test_counts_sum_over_engines_and_kv_usage_is_the_fullest_engine() -> None:
    m = parse_vllm_metrics(VLLM_SAMPLE)

    assert (m.running, m.waiting) == (5, 4)
    assert m.kv_cache_usage == pytest.approx(0.42)
    assert (m.prefix_hits, m.prefix_queries) == (250, 1000)


def test_older_vllm_spellings_are_understood() -> None:
    m = parse_vllm_metrics(OLDER_SAMPLE)

    assert (m.running, m.waiting) == (1, 0)
    assert m.kv_cache_usage == pytest.approx(0.9)
    assert (m.prefix_hits, m.prefix_queries) == (-1, -1)


def test_anything_not_exported_is_unknown() -> None:
    assert parse_vllm_metrics("upstream_requests_total 7\n# nothing else\n") == NO_METRICS
    assert parse_vllm_metrics(
        'vllm:num_requests_running{model_name="a b"} 2\nvllm:num_requests_waiting garbage\n'
    ) == ServerMetrics(running=2)


def test_hit_rate_is_over_the_last_interval_and_holds_when_idle() -> None:
    first = ServerMetrics(prefix_hits=250, prefix_queries=1000)
    later = ServerMetrics(prefix_hits=650, prefix_queries=1500)

    assert prefix_hit_rate(NO_METRICS, first, -1) == 0.25
    assert prefix_hit_rate(first, later, 0.25) == 0.8
    assert prefix_hit_rate(later, later, 0.8) == 0.8
    assert prefix_hit_rate(later, first, 0.8) == 0.25, "a restarted server's counters start again"
    assert prefix_hit_rate(first, NO_METRICS, 0.25) == -1
