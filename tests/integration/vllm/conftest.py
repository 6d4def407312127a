"""Fixtures of the tests that run vLLM's own code (the CPU build in .venv-vllm)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.vllm.helpers import VllmChecker


@pytest.fixture(scope="session")
def vllm_checker() -> Iterator[VllmChecker]:
    """One process for the whole session: importing vLLM takes seconds."""
    checker = VllmChecker()
    yield checker
    checker.close()
