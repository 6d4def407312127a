"""Routers call the textgen pods' engines directly: the textgen and router manifests, production.yaml and
compose agree on where each engine is advertised, on which port, behind which policy and with which key."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from aigw_server.router.engines import reachable
from aigw_server.textgen.settings import TextgenSettings, resolve_settings
from tests.unit.deploy.helpers import (
    PLACEHOLDER_ENV,
    compose_services,
    containers,
    of_kind,
    pod_env,
    production_config,
    workloads,
)
from tests.unit.deploy.test_k8s_security import allowed_from

WORKLOADS = {w["metadata"]["name"]: w for w in workloads()}
TEXTGEN = WORKLOADS["textgen"]
POD = {c["name"]: c for c in containers(TEXTGEN)}
HPA = next(h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "textgen")
ENGINE_KEY = {"secretKeyRef": {"name": "aigw-secrets", "key": "VLLM_API_KEY"}}


def textgen_pod(ordinal: int, pod_ip: str) -> TextgenSettings:
    """What the textgen process of pod `textgen-<ordinal>` resolves, as the kubelet starts it."""
    env = pod_env(TEXTGEN, POD["textgen"], ordinal, pod_ip)
    return resolve_settings(production_config(env), {**PLACEHOLDER_ENV, **env})


def vllm_port() -> int:
    args = [str(a) for a in POD["vllm"]["args"]]
    return int(args[args.index("--port") + 1])


def test_every_pod_the_autoscaler_may_start_is_a_backend_of_its_own() -> None:
    assert TEXTGEN["kind"] == "StatefulSet"
    service = next(s for s in of_kind("Service") if s["metadata"]["name"] == TEXTGEN["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "pods need their own DNS names"
    assert service["spec"]["publishNotReadyAddresses"] is True, "routers see a loading pod's state"
    assert HPA["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    chat = production_config().backends_of("textgen")
    assert [b.name for b in chat] == [f"textgen-{i}" for i in range(HPA["spec"]["maxReplicas"])]
    grpc = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert [b.address for b in chat] == [f"textgen-{i}.textgen:{grpc}" for i in range(len(chat))]


@pytest.mark.parametrize("ordinal", [0, 3])
def test_a_pod_advertises_its_ip_and_keeps_loopback_for_itself(ordinal: int) -> None:
    settings = textgen_pod(ordinal, f"10.244.{ordinal}.7")
    assert settings.name == f"textgen-{ordinal}"
    assert settings.address == "0.0.0.0:50053"
    assert settings.metrics_port == next(p["containerPort"] for p in POD["textgen"]["ports"] if p["name"] == "metrics")
    assert settings.url == f"http://127.0.0.1:{vllm_port()}", "probes and lifecycle calls stay in the pod"
    assert settings.advertise_url == f"http://10.244.{ordinal}.7:{vllm_port()}"
    # What a router makes of it: its own config (no AIGW_TEXTGEN_* there) names the pod at its DNS name.
    router_view = production_config(pod_env(WORKLOADS["router"], next(containers(WORKLOADS["router"])))).backend(settings.name)
    assert router_view.address == f"textgen-{ordinal}.textgen:50053"
    assert reachable(settings.advertise_url, router_view.address)
    assert not reachable(settings.url, router_view.address), "loopback alone would keep the hop through textgen"


def test_the_router_takes_the_pods_addresses_from_the_config_alone() -> None:
    router = next(containers(WORKLOADS["router"]))
    assert not [e["name"] for e in router.get("env", []) if e["name"].startswith("AIGW_TEXTGEN_")]


def test_the_advertised_port_is_the_engines_and_only_routers_and_prometheus_reach_it() -> None:
    port = urlsplit(textgen_pod(0, "10.244.0.7").advertise_url).port
    assert port == vllm_port()
    assert "0.0.0.0" in [str(a) for a in POD["vllm"]["args"]], "vLLM must listen on the pod IP"
    assert port in {p["containerPort"] for p in POD["vllm"]["ports"]}
    assert allowed_from("textgen", port) == {"router", "namespace:{'kubernetes.io/metadata.name': 'monitoring'}"}


def test_textgen_hands_routers_the_key_vllm_takes_from_the_same_secret() -> None:
    backend = production_config().backend("textgen-0")
    textgen_env: dict[str, Any] = {e["name"]: e.get("valueFrom") for e in POD["textgen"]["env"]}
    vllm_env: dict[str, Any] = {e["name"]: e.get("valueFrom") for e in POD["vllm"]["env"]}
    assert textgen_env[backend.api_key_env] == vllm_env["VLLM_API_KEY"] == ENGINE_KEY
    for container in containers(TEXTGEN):
        text = str([container.get("command"), container.get("args")])
        assert "api-key" not in text
        assert "VLLM_API_KEY" not in text


def test_compose_runs_one_chat_backend_whose_engine_the_router_reaches_by_name() -> None:
    services = compose_services()
    textgen_env = {k: str(v) for k, v in services["textgen"]["environment"].items()}
    router_env = {k: str(v) for k, v in services["router"]["environment"].items()}
    mine = resolve_settings(production_config(textgen_env), {**PLACEHOLDER_ENV, **textgen_env})
    router_view = production_config(router_env)
    assert [b.name for b in router_view.backends_of("textgen")] == [mine.name] == ["textgen-0"]
    assert router_view.backend(mine.name).address == "textgen:50053"
    assert mine.address == "0.0.0.0:50053"
    # Both call vLLM by its service name, so textgen advertises the URL it uses and the router calls it directly.
    assert (mine.advertise_url or mine.url) == "http://vllm:8000"
    assert reachable(mine.url, router_view.backend(mine.name).address)
    command = [str(a) for a in services["vllm"]["command"]]
    assert command[command.index("--port") + 1] == "8000"
