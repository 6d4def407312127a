"""Fixtures that run the whole local mesh through the launcher, on free ports, in a temporary data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.mesh import Mesh
from harness.mesh_config import Auth, ChatModel, MeshSpec, OcrModel, SupervisedEngine, TesseractOcr

JWT_SECRET = "e2e-secret-" + "x" * 40
ADMIN_PASSWORD = "e2e-admin-password-123"


def mesh_spec(data_dir: Path, tiny_model_dir: Path) -> MeshSpec:
    """A mesh like config/offline.yaml (the tiny model on `transformers serve`, Tesseract), its data in `data_dir`."""
    return MeshSpec(
        data_dir=data_dir,
        auth=Auth(JWT_SECRET, ADMIN_PASSWORD),
        models=(
            ChatModel("tiny-chat", max_concurrent=4, path=tiny_model_dir, default_max_tokens=16),
            OcrModel("tesseract", max_concurrent=2),
        ),
        backends=(
            SupervisedEngine("cpu-0", "transformers", models=("tiny-chat",), capacity=4),
            TesseractOcr(),
        ),
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Mesh]:
    """The whole mesh, started once per test module."""
    data = tmp_path_factory.mktemp("mesh")
    running = Mesh(mesh_spec(data / "data", tiny_model_dir).write(data / "config.yaml"))
    try:
        running.start(timeout=150)
        yield running
    finally:
        running.stop()
