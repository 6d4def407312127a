"""The test-only annotated service, compiled once per session."""

from __future__ import annotations

import pytest

from tests.protos.compile import EdgeTestProtos, compile_edgetest


@pytest.fixture(scope="session")
def edgetest(tmp_path_factory: pytest.TempPathFactory) -> EdgeTestProtos:
    return compile_edgetest(tmp_path_factory.mktemp("edgetest"))
