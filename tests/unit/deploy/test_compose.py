"""deploy/compose.yaml and deploy/Dockerfile, checked offline: every path, module, port and variable they name exists."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    DEPLOY,
    REPO,
    compose_services,
    compose_variables,
    module_exists,
    production_config,
    python_module,
)

SERVICES = compose_services()
AIGW = {name: s for name, s in SERVICES.items() if str(s.get("image", "")).startswith("aigw")}
ONE_SHOT = {"mongo-init"}


def test_the_mesh_is_all_there() -> None:
    assert set(AIGW) == {"queue", "admin", "router", "textgen", "ocr", "ocr-tesseract"}
    assert {"mongo", "mongo-init", "envoy", "vllm", "deepseek-ocr"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(AIGW))
def test_aigw_services_build_from_the_dockerfile_and_run_a_real_module(name: str) -> None:
    service = AIGW[name]
    build = service["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO
    dockerfile = (REPO / build["dockerfile"]).read_text()
    assert re.search(rf"^FROM .+ AS {build['target']}$", dockerfile, re.MULTILINE)
    assert module_exists(python_module(service["command"]))
    assert service["environment"]["AIGW_CONFIG"] == "/app/deploy/config/production.yaml"
    assert (REPO / "deploy" / "config" / "production.yaml").exists()
    assert service["env_file"][0]["path"] == ".env"


@pytest.mark.parametrize("name", sorted(AIGW))
def test_healthchecks_probe_the_port_the_service_binds(name: str) -> None:
    service = AIGW[name]
    test = service["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "aigw_server.runtime.healthcheck"]
    assert module_exists("aigw_server.runtime.healthcheck")
    cfg = production_config({k: str(v) for k, v in service["environment"].items()})
    backend = service["environment"].get("AIGW_BACKEND")
    bound = cfg.backend(backend).address if backend else cfg.endpoint(name).address  # type: ignore[arg-type]
    assert bound.rsplit(":", 1)[1] == test[4].rsplit(":", 1)[1]


@pytest.mark.parametrize("name", ["textgen", "ocr", "ocr-tesseract"])
def test_backend_containers_run_a_backend_of_their_kind(name: str) -> None:
    service = AIGW[name]
    backend = production_config().backend(service["environment"]["AIGW_BACKEND"])
    assert python_module(service["command"]) == f"aigw_server.{backend.kind}"
    if name == "ocr-tesseract" or name == "ocr":
        assert service["build"]["target"] == "ocr"


def test_the_queue_gets_the_replica_set_and_secrets_come_from_the_env_file() -> None:
    assert "replicaSet=rs0" in AIGW["queue"]["environment"]["MONGODB_URI"]
    example = (DEPLOY / ".env.example").read_text()
    for key in ("JWT_SECRET", "AIGW_ADMIN_PASSWORD"):
        assert re.search(rf"^{key}=", example, re.MULTILINE)
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_mongodb_is_a_replica_set_initiated_before_the_queue_starts() -> None:
    assert "--replSet" in SERVICES["mongo"]["command"]
    assert "rs.initiate" in " ".join(SERVICES["mongo-init"]["command"])
    assert AIGW["queue"]["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["vllm", "deepseek-ocr"])
def test_model_servers_reserve_a_gpu_and_serve_the_configured_name(name: str) -> None:
    service = SERVICES[name]
    assert service["image"].startswith("vllm/vllm-openai:")
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cfg = production_config()
    served = {m.served_name for m in cfg.models.values()}
    command = service["command"]
    assert command[command.index("--served-model-name") + 1] in served
    urls = {b.url for b in cfg.backends if b.url}
    assert f"http://{name}:8000" in urls


def test_envoy_mounts_its_config_and_the_descriptor_set_where_its_config_expects_them() -> None:
    envoy = SERVICES["envoy"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in envoy["volumes"])
    assert mounts == {
        "../envoy/envoy.yaml": "/etc/envoy/envoy.yaml",
        "../gen/aigw_descriptor.binpb": "/etc/envoy/aigw_descriptor.binpb",
    }
    assert envoy["ports"] == ["8080:8080"]


def _bind_sources(service: dict[str, Any]) -> list[str]:
    return [v.split(":", 1)[0] for v in service.get("volumes", []) if v.startswith((".", "/"))]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_path_and_dependency_a_service_names_exists(name: str) -> None:
    service = SERVICES[name]
    for source in _bind_sources(service):
        assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in the repository"
    for dependency in service.get("depends_on", {}):
        assert dependency in SERVICES
    expected = "on-failure" if name in ONE_SHOT else "always"
    assert service["restart"] == expected
    assert "healthcheck" in service or name in ONE_SHOT


def test_every_variable_has_a_default_or_an_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    example = set(re.findall(r"^([A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text(), re.MULTILINE))
    missing = {name for name, has_default in compose_variables(text) if not has_default and name not in example}
    assert missing == set()


def test_the_dockerfile_installs_from_the_lock_and_the_ocr_image_adds_tesseract() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11|^ARG PYTHON_IMAGE=python:3\.11", dockerfile, re.MULTILINE)
    assert "uv sync --frozen" in dockerfile
    assert re.search(r"FROM base AS ocr\n(.*\n)*.*tesseract-ocr-all", dockerfile)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert path == "." or (REPO / path).exists()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "data", "deploy/.env"} <= set(ignored)


def test_the_store_needs_credentials_and_every_aigw_service_holds_only_its_own_identity() -> None:
    mongo = SERVICES["mongo"]
    assert "--keyFile" in mongo["command"]
    assert "MONGO_INITDB_ROOT_PASSWORD" in mongo["environment"]
    assert "authSource=admin" in AIGW["queue"]["environment"]["MONGODB_URI"]
    identities = {"queue": "queue", "admin": "admin", "router": "router", "textgen": "textgen", "ocr": "ocr"}
    identities["ocr-tesseract"] = "ocr"
    for name, identity in identities.items():
        targets = {s["target"] for s in SERVICES[name]["secrets"]}
        assert targets == {"ca.crt", f"{identity}.crt", f"{identity}.key", "probe.crt", "probe.key"}, name
        assert SERVICES[name]["environment"]["AIGW_TLS_DIR"] == "/run/secrets"
    envoy = {s["target"] for s in SERVICES["envoy"]["secrets"]}
    assert envoy == {"/etc/aigw/tls/ca.crt", "/etc/aigw/tls/edge.crt", "/etc/aigw/tls/edge.key"}


def test_the_chat_engine_refuses_callers_without_its_key() -> None:
    vllm, textgen = SERVICES["vllm"], SERVICES["textgen"]
    assert vllm["environment"]["VLLM_API_KEY"].startswith("${VLLM_API_KEY:?")
    assert not any("api-key" in str(arg) for arg in [*vllm.get("entrypoint", []), *vllm["command"]])
    backend = production_config().backend("textgen-0")
    assert textgen["environment"][backend.api_key_env] == vllm["environment"]["VLLM_API_KEY"]
    assert re.search(r"^VLLM_API_KEY=", (DEPLOY / ".env.example").read_text(), re.MULTILINE)
