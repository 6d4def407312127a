"""The vLLM servers of deploy/: reachable by their probes and scrapers, started one at a time per GPU, scraped
for the metrics the autoscaler reads, and running the scheduling policy that textgen's priorities need."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    K8S,
    compose_services,
    containers,
    documents,
    env_values,
    of_kind,
    production_config,
    workloads,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MONITORING = K8S.parent / "k8s-monitoring"


def _flag(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _vllm_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w in workloads() for c in containers(w) if c["image"].startswith("vllm/")]


def _compose_vllm() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose_services().items() if str(s.get("image", "")).startswith("vllm/")}


def _probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]


@pytest.mark.parametrize("index", range(2))
def test_k8s_model_servers_listen_where_their_http_probes_knock(index: int) -> None:
    """An httpGet probe without `host` goes to the pod IP: a server bound to loopback never becomes Ready."""
    workload, container = _vllm_containers()[index]
    argv = [*container.get("command", []), *container.get("args", [])]
    http_probes = [p["httpGet"] for p in _probes(container) if "httpGet" in p]

    assert http_probes, f"{workload['metadata']['name']}: the model server has HTTP probes"
    assert all("host" not in p for p in http_probes)
    assert _flag(argv, "--host") not in LOOPBACK, f"{workload['metadata']['name']}: vLLM must bind the pod IP"
    ports = {p["containerPort"] for p in container["ports"]} | {p["name"] for p in container["ports"]}
    assert int(_flag(argv, "--port") or 8000) in ports
    assert all(p["port"] in ports for p in http_probes)


def test_compose_starts_the_model_servers_that_share_a_gpu_one_after_another() -> None:
    """vLLM sizes its memory from whole-GPU readings: a second server loading alongside the first miscounts."""
    servers = _compose_vllm()
    assert len(servers) == 2
    gpu = [n for n, s in servers.items() if s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")]
    assert sorted(gpu) == sorted(servers), "both reserve the GPU (count 1: the same device on a one-GPU host)"

    def waits_for(name: str, other: str) -> bool:
        depends = servers[name].get("depends_on", {})
        return isinstance(depends, dict) and depends.get(other, {}).get("condition") == "service_healthy"

    first, second = sorted(servers)
    assert waits_for(first, second) != waits_for(second, first), "exactly one waits until the other is healthy"
    waiting = first if waits_for(first, second) else second
    assert servers[first if waiting == second else second]["healthcheck"]["test"], "what it waits for has a healthcheck"


def test_the_base_autoscaler_reads_only_metrics_every_cluster_has() -> None:
    """A metric nothing produces keeps an HPA from ever scaling down."""
    for hpa in of_kind("HorizontalPodAutoscaler"):
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds <= {"Resource", "ContainerResource"}, hpa["metadata"]["name"]


def test_the_monitoring_overlay_produces_the_metric_its_autoscaler_reads() -> None:
    overlay = documents(MONITORING / "kustomization.yaml")[0]
    assert (MONITORING / overlay["resources"][0]).resolve() == K8S.resolve()
    patch = documents(MONITORING / overlay["patches"][0]["path"])[0]
    base = {h["metadata"]["name"]: h for h in of_kind("HorizontalPodAutoscaler")}
    assert patch["metadata"]["name"] in base
    wanted = {m["pods"]["metric"]["name"] for m in patch["spec"]["metrics"] if m["type"] == "Pods"}

    # prometheus-adapter turns the scraped vLLM series into that per-pod metric ...
    rules = documents(MONITORING / "prometheus-adapter-values.yaml")[0]["rules"]["custom"]
    produced = {r["name"]["as"]: r for r in rules}
    assert wanted
    assert wanted <= set(produced)
    for name in wanted:
        rule = produced[name]
        series = rule["seriesQuery"].split("{")[0]
        assert series == "vllm:num_requests_waiting", "a gauge vLLM exports (checked against the real server in tests)"
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}

    # ... from a scrape of the vLLM containers of the workload the autoscaler scales, on a port they bind.
    monitor = next(d for d in documents(MONITORING / "podmonitor.yaml") if d["kind"] == "PodMonitor")
    scaled = base[patch["metadata"]["name"]]["spec"]["scaleTargetRef"]["name"]
    target = next(w for w in workloads() if w["metadata"]["name"] == scaled)
    labels = target["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchExpressions"][0]
    assert labels[selector["key"]] in selector["values"]
    vllm = next(c for c in containers(target) if c["image"].startswith("vllm/"))
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert any(p["name"] in scraped for p in vllm["ports"])
    assert _flag(vllm.get("args", []), "--host") not in LOOPBACK


def test_priorities_reach_the_attached_chat_server() -> None:
    """textgen sends `priority` to an attached vLLM unless told it runs without the policy; the server must run it."""
    cfg = production_config()
    chat = [b for b in cfg.backends if b.kind == "textgen" and b.engine == "vllm"]
    assert chat
    assert all(b.priority_scheduling for b in chat)
    compose = _compose_vllm()["vllm"]
    assert _flag(compose["command"], "--scheduling-policy") == "priority"
    textgen = next(w for w in workloads() if w["metadata"]["name"] == "textgen")
    server = next(c for c in containers(textgen) if c["image"].startswith("vllm/"))
    assert _flag(server["args"], "--scheduling-policy") == "priority"
    assert env_values(textgen["spec"]["template"]["spec"]["containers"][0])["AIGW_TEXTGEN_URL"].endswith(":8000")
