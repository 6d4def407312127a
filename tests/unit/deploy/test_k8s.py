"""deploy/k8s checked offline: objects well formed, selectors match, probes hit declared ports, references resolve."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    GRPC_SERVICES,
    K8S,
    containers,
    documents,
    env_values,
    k8s_objects,
    kustomization,
    module_exists,
    of_kind,
    pod_env,
    production_config,
    python_module,
    workloads,
)

OBJECTS = k8s_objects()
WORKLOADS = {w["metadata"]["name"]: w for w in workloads()}
SECRETS = {s["metadata"]["name"]: s for s in documents(K8S / "secret.template.yaml")}
GENERATED = {g["name"]: g for g in kustomization()["configMapGenerator"]}


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    return selector.items() <= _labels(workload).items()


def _ports(container: dict[str, Any]) -> set[int | str]:
    return {p["containerPort"] for p in container.get("ports", [])} | {p["name"] for p in container.get("ports", [])}


def test_every_manifest_is_in_the_kustomization_and_every_object_is_named() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.template.yaml"}
    assert listed == on_disk
    for obj in OBJECTS:
        assert obj["apiVersion"]
        assert obj["kind"]
        assert obj["metadata"]["name"]
    names = [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    assert len(names) == len(set(names))
    assert kustomization()["namespace"] == "aigw"


def _generated_files(envoy: bool) -> list[str]:
    entries = [e.split("=", 1)[-1] for g in GENERATED.values() for e in g["files"]]
    return [e for e in entries if ("/envoy/" in e) == envoy]


def test_the_generators_read_files_that_exist() -> None:
    assert [e for e in _generated_files(envoy=False) if not (K8S / e).exists()] == []
    assert GENERATED["aigw-config"]["files"] == ["config.yaml=../config/production.yaml"]


def test_the_envoy_config_generator_reads_a_file_that_exists() -> None:
    assert [e for e in _generated_files(envoy=True) if not (K8S / e).exists()] == []


def test_the_mesh_is_all_there() -> None:
    assert set(WORKLOADS) == {"mongo", "queue", "admin", "router", "textgen", "ocr", "ocr-tesseract", "envoy"}
    assert WORKLOADS["mongo"]["kind"] == "StatefulSet"
    assert WORKLOADS["mongo"]["spec"]["replicas"] == 3
    mongo_service = next(s for s in of_kind("Service") if s["metadata"]["name"] == WORKLOADS["mongo"]["spec"]["serviceName"])
    assert mongo_service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_selectors_match_the_pod_template(name: str) -> None:
    workload = WORKLOADS[name]
    assert _selects(workload["spec"]["selector"]["matchLabels"], workload)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_probes_target_declared_ports_and_real_grpc_services(name: str) -> None:
    for container in containers(WORKLOADS[name]):
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None or "exec" in probe:
                continue
            handler = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
            assert handler["port"] in _ports(container), f"{name}/{container['name']} {kind}"
            if "grpc" in probe and probe["grpc"].get("service"):
                assert probe["grpc"]["service"] in GRPC_SERVICES


def readiness(container: dict[str, Any]) -> tuple[int, str]:
    """(port, gRPC service) of a pod's readiness check: Kubernetes' own gRPC probe on a public port, or
    aigw_server.runtime.healthcheck with the probe identity on an mTLS-only port."""
    probe = container["readinessProbe"]
    if "grpc" in probe:
        return int(probe["grpc"]["port"]), str(probe["grpc"].get("service", ""))
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "-m", "aigw_server.runtime.healthcheck"], command
    assert command[command.index("--tls-dir") + 1] == "/etc/aigw/tls"
    return int(command[3].rsplit(":", 1)[1]), command[command.index("--service") + 1]


@pytest.mark.parametrize("name", [n for n in sorted(WORKLOADS) if n not in ("mongo", "envoy")])
def test_aigw_pods_are_ready_by_grpc_health_and_run_a_real_module(name: str) -> None:
    main = WORKLOADS[name]["spec"]["template"]["spec"]["containers"][0]
    assert readiness(main)[1] in GRPC_SERVICES
    assert module_exists(python_module(main["command"]))
    env = env_values(main)
    assert env["AIGW_CONFIG"] == "/etc/aigw/config.yaml"
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in WORKLOADS[name]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/aigw"]]["configMap"]["name"] == "aigw-config"


@pytest.mark.parametrize("name", ["queue", "admin", "router", "textgen", "ocr", "ocr-tesseract"])
def test_each_pod_binds_the_port_its_probes_and_service_use(name: str) -> None:
    main = WORKLOADS[name]["spec"]["template"]["spec"]["containers"][0]
    env = pod_env(WORKLOADS[name], main)
    cfg = production_config(env)
    backend = env.get("AIGW_BACKEND")
    service = python_module(main["command"]).split(".")[1]
    bound = cfg.backend(backend).address if backend else cfg.endpoint(service).address  # type: ignore[arg-type]
    host, port = bound.rsplit(":", 1)
    assert host == "0.0.0.0"
    assert readiness(main)[0] == int(port)
    if backend:
        assert cfg.backend(backend).kind == service


def test_services_select_workloads_and_target_declared_ports() -> None:
    for service in of_kind("Service"):
        selected = [w for w in WORKLOADS.values() if _selects(service["spec"]["selector"], w)]
        assert len(selected) == 1, service["metadata"]["name"]
        declared = set().union(*(_ports(c) for c in containers(selected[0])))
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["port"]) in declared


def test_backend_addresses_in_the_config_are_services_here() -> None:
    """A backend is a Service, or one pod of a StatefulSet by its stable name `<pod>.<headless Service>`."""
    services = {(s["metadata"]["name"], p["port"]) for s in of_kind("Service") for p in s["spec"]["ports"]}
    pods = {
        f"{name}-{i}.{w['spec']['serviceName']}"
        for name, w in WORKLOADS.items()
        if w["kind"] == "StatefulSet"
        for i in range(max_replicas(name))
    }
    for backend in production_config().backends:
        host, port = backend.address.rsplit(":", 1)
        if host in pods:
            host = host.split(".", 1)[1]
        assert (host, int(port)) in services, backend.name


def max_replicas(name: str) -> int:
    """The most pods a workload runs: its autoscaler's maximum, else its replicas."""
    hpa = [h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
    return int(hpa[0]["spec"]["maxReplicas"]) if hpa else int(WORKLOADS[name]["spec"].get("replicas", 1))


def test_config_maps_and_secrets_referenced_exist() -> None:
    for name, workload in WORKLOADS.items():
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in GENERATED, name
            if "secret" in volume:
                assert volume["secret"]["secretName"] in SECRETS, name
        for container in containers(workload):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["key"] in SECRETS[ref["name"]]["stringData"], f"{name}: {ref}"


def test_the_secret_template_holds_no_real_secrets() -> None:
    for secret in SECRETS.values():
        assert secret["kind"] == "Secret"
        for key, value in secret["stringData"].items():
            assert value in ("", "root", "aigw") or "CHANGE-ME" in value, key
    assert "k8s/secret.yaml" in (K8S.parent / ".gitignore").read_text().split()


def test_model_servers_get_one_gpu_each() -> None:
    servers = [c for w in WORKLOADS.values() for c in containers(w) if c["image"].startswith("vllm/")]
    assert len(servers) == 2
    for container in servers:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    gpu_pods = {n for n, w in WORKLOADS.items() if any(c["image"].startswith("vllm/") for c in containers(w))}
    for name in gpu_pods:
        url = env_values(WORKLOADS[name]["spec"]["template"]["spec"]["containers"][0])
        assert any(v == "http://127.0.0.1:8000" for v in url.values())


def test_autoscalers_and_disruption_budgets_point_at_workloads() -> None:
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler")}
    assert targets == {"router", "textgen"}
    for hpa in of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["kind"] == WORKLOADS[hpa["spec"]["scaleTargetRef"]["name"]]["kind"]
    for pdb in of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [w for w in WORKLOADS.values() if _selects(selector, w)], pdb["metadata"]["name"]
    covered = {pdb["metadata"]["name"] for pdb in of_kind("PodDisruptionBudget")}
    assert {"router", "envoy", "mongo", "textgen"} <= covered


def test_envoy_mounts_its_config_and_descriptor_from_the_generated_config_map() -> None:
    envoy = WORKLOADS["envoy"]["spec"]["template"]["spec"]
    assert envoy["containers"][0]["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]
    assert envoy["volumes"][0]["configMap"]["name"] == "envoy-config"
    assert sorted(f.split("=")[0] for f in GENERATED["envoy-config"]["files"]) == ["aigw_descriptor.binpb", "envoy.yaml"]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_liveness_never_follows_readiness(name: str) -> None:
    """A pod whose dependency is down is unready, not restarted: liveness asks only whether the process is up."""
    for container in containers(WORKLOADS[name]):
        live = container.get("livenessProbe")
        if live is None or "exec" in live or container["name"] in ("vllm", "deepseek-ocr"):
            continue
        assert "grpc" not in live, f"{name}/{container['name']}: gRPC health here is readiness"
        if "httpGet" in live:
            assert live["httpGet"]["path"] == "/livez"
