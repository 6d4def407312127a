"""Fixtures that run the whole local mesh through the launcher, on free ports, in a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ferretdb import free_ports
from harness.mesh import Mesh, services_on, write_config

JWT_SECRET = "e2e-secret-" + "x" * 40
ADMIN_PASSWORD = "e2e-admin-password-123"


def mesh_config(data_dir: Path, tiny_model_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A config like config/offline.yaml, on free ports, with its data in `data_dir`."""
    ports = iter(free_ports(24))  # distinct: ports chosen one by one may repeat
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": next(ports), "metrics_port": next(ports)},
        "services": services_on(ports),
        "data_dir": str(data_dir),
        "database": {"uri": ""},
        "auth": {"jwt_secret": JWT_SECRET, "admin_password": ADMIN_PASSWORD},
        "logging": {"level": "INFO"},
        "models": {
            "tiny-chat": {"kind": "chat", "max_concurrent": 4, "path": str(tiny_model_dir), "default_max_tokens": 16},
            "tesseract": {"kind": "ocr", "max_concurrent": 2, "languages": ["eng"]},
        },
        "backends": [
            {
                "name": "cpu-0",
                "kind": "textgen",
                "address": f"127.0.0.1:{next(ports)}",
                "engine": "transformers",
                "mode": "supervise",
                "port": next(ports),
                "models": ["tiny-chat"],
                "initial_model": "tiny-chat",
                "capacity": 4,
            },
            {
                "name": "tesseract-0",
                "kind": "ocr",
                "address": f"127.0.0.1:{next(ports)}",
                "engine": "tesseract",
                "models": ["tesseract"],
                "initial_model": "tesseract",
                "capacity": 2,
            },
        ],
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Mesh]:
    """The whole mesh, started once per test module."""
    data = tmp_path_factory.mktemp("mesh")
    config = write_config(data / "config.yaml", mesh_config(data / "data", tiny_model_dir))
    running = Mesh(config)
    try:
        running.start(timeout=150)
        yield running
    finally:
        running.stop()
