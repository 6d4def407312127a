"""deploy/config/production.yaml loads, names real backends, and binds where each container says."""

from __future__ import annotations

import pytest

from aigw_server.router.service import check_routing
from aigw_server.textgen.settings import resolve_settings
from tests.unit.deploy.helpers import PLACEHOLDER_ENV, compose_services, production_config


def test_it_loads_with_placeholder_secrets_and_uses_mongodb() -> None:
    cfg = production_config()
    assert not cfg.database.embedded
    assert cfg.auth.jwt_secret == "x" * 64
    assert {b.kind for b in cfg.backends} == {"textgen", "ocr"}
    assert {b.engine for b in cfg.backends} == {"vllm", "deepseek-ocr", "tesseract"}
    check_routing(cfg)
    for backend in cfg.backends_of("textgen"):
        assert resolve_settings(cfg, {**PLACEHOLDER_ENV, "AIGW_BACKEND": backend.name}).url


def test_services_reach_each_other_by_their_service_names() -> None:
    cfg = production_config()
    assert cfg.services.queue.address == "queue:50052"
    assert cfg.services.admin.address == "admin:50055"
    chat = [f"textgen-{i}.textgen:50053" for i in range(4)]
    assert [b.address for b in cfg.backends] == [*chat, "ocr:50054", "ocr-tesseract:50054"]


@pytest.mark.parametrize(("service", "port"), [("queue", 50052), ("admin", 50055), ("router", 50051)])
def test_each_core_container_binds_all_interfaces(service: str, port: int) -> None:
    environment = compose_services()[service]["environment"]
    cfg = production_config({k: str(v) for k, v in environment.items()})
    assert cfg.endpoint(service).address == f"0.0.0.0:{port}"  # type: ignore[arg-type]


@pytest.mark.parametrize("service", ["textgen", "ocr", "ocr-tesseract"])
def test_each_backend_container_binds_its_own_backend_address(service: str) -> None:
    environment = {k: str(v) for k, v in compose_services()[service]["environment"].items()}
    cfg = production_config(environment)
    backend = cfg.backend(environment["AIGW_BACKEND"])
    assert backend.address.startswith("0.0.0.0:")
    others = [b.address for b in cfg.backends if b.name != backend.name]
    assert not any(a.startswith("0.0.0.0") for a in others)
