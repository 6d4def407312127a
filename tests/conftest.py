"""Fixtures shared by the whole suite: the embedded FerretDB, the tiny model, unique database names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ferretdb import FerretDBProcess, ensure_built

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def ferretdb_binary() -> Path:
    """The FerretDB binary, built on first use."""
    return ensure_built(REPO)


@pytest.fixture(scope="session")
def ferretdb(ferretdb_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDBProcess]:
    """One embedded FerretDB for the session; tests isolate themselves with `db_name`."""
    proc = FerretDBProcess(ferretdb_binary, tmp_path_factory.mktemp("ferretdb"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def db_name() -> str:
    """A database name no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat model, generated once per session."""
    from tools.make_tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")
