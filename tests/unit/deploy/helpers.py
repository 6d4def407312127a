"""Reading the deployment files: YAML documents, compose services, Kubernetes workloads and their containers."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from aigw.admin.v1 import admin_pb2
from aigw.ocr.v1 import ocr_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.runtime.config import GatewayConfig, parse_config

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
# Written alongside this deployment; until it lands, the checks that read it are expected to fail.
PLACEHOLDER_ENV = {
    "MONGODB_URI": "mongodb://mongo:27017/aigw?replicaSet=rs0",
    "JWT_SECRET": "x" * 64,
    "AIGW_TEXTGEN_API_KEY": "k" * 32,
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
GRPC_SERVICES = frozenset(
    s.full_name
    for module in (router_pb2, admin_pb2, queue_pb2, textgen_pb2, ocr_pb2)
    for s in module.DESCRIPTOR.services_by_name.values()
)


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file (empty ones skipped)."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def production_config(extra_env: dict[str, str] | None = None) -> GatewayConfig:
    raw = yaml.safe_load((DEPLOY / "config" / "production.yaml").read_text(encoding="utf-8"))
    return parse_config(raw, {**PLACEHOLDER_ENV, **(extra_env or {})}, source="deploy/config/production.yaml")


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = documents(DEPLOY / "compose.yaml")[0]["services"]
    return services


def python_module(command: list[str]) -> str:
    """The module of `python -m MODULE …`, or "" when the command is something else."""
    if len(command) >= 3 and command[0] in ("python", "python3") and command[1] == "-m":
        return command[2]
    return ""


def module_exists(module: str) -> bool:
    base = REPO.joinpath(*module.split("."))
    return (base / "__main__.py").exists() or base.with_suffix(".py").exists()


def kustomization() -> dict[str, Any]:
    return documents(K8S / "kustomization.yaml")[0]


@functools.cache
def k8s_objects() -> list[dict[str, Any]]:
    """Every object the kustomization applies (resources only; generated ConfigMaps aside)."""
    return [obj for name in kustomization()["resources"] for obj in documents(K8S / name)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] in WORKLOAD_KINDS]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """Literal env values of a container (secret references left out)."""
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def pod_env(workload: dict[str, Any], container: dict[str, Any], ordinal: int = 0, pod_ip: str = "10.244.0.9") -> dict[str, str]:
    """A container's environment as the kubelet hands it to pod `ordinal` (a StatefulSet's `<name>-<ordinal>`):
    literals, the downward API's pod name and IP, `$(VAR)` references expanded (secret references left out)."""
    fields = {"metadata.name": f"{workload['metadata']['name']}-{ordinal}", "status.podIP": pod_ip}
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def compose_variables(text: str) -> set[tuple[str, bool]]:
    """(name, has_default) of every ${VAR} / ${VAR:-x} interpolation in a compose file."""
    return {(m.group(1), m.group(2) is not None) for m in re.finditer(r"\$\{([A-Z0-9_]+)(:-[^}]*)?\}", text)}
