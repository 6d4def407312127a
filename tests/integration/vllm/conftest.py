"""Fixtures of the tests that run vLLM's own code (the CPU build in .venv-vllm)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.vllm.helpers import VLLM_ENV, VllmChecker


@pytest.fixture(scope="session")
def vllm_checker() -> Iterator[VllmChecker]:
    """One process for the whole session: importing vLLM takes seconds."""
    checker = VllmChecker()
    yield checker
    checker.close()


@pytest.fixture(scope="module")
def vllm_env() -> Iterator[None]:
    """vLLM's CPU settings for the servers a module starts (children inherit them), restored afterwards."""
    saved = {k: os.environ.get(k) for k in VLLM_ENV}
    os.environ.update(VLLM_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
