"""The router's domain modules (the job execution among them) load without gRPC and without the proto adapter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DOMAIN_MODULES = (
    "aigw_server.router.jobs.contracts",
    "aigw_server.router.jobs.events",
    "aigw_server.router.jobs.inference",
    "aigw_server.router.jobs.own_jobs",
    "aigw_server.router.jobs.orphans",
    "aigw_server.router.jobs.runner",
    "aigw_server.router.background",
    "aigw_server.router.backends",
    "aigw_server.router.catalog",
    "aigw_server.router.chat",
    "aigw_server.router.gate",
    "aigw_server.router.ocr_input",
    "aigw_server.router.openai_compat",
    "aigw_server.router.policies",
    "aigw_server.router.ratelimit",
    "aigw_server.router.readiness",
)
SERVICER_SIDE = ("grpc", "grpc_status", "grpc_health", "aigw_server.router.convert", "aigw_server.router.clients")

# Run in a fresh interpreter: this one has loaded gRPC already for other tests.
PROBE = textwrap.dedent(
    """
    import importlib, sys
    module = sys.argv[1]
    importlib.import_module(module)
    blocked = tuple(sys.argv[2:])
    loaded = sorted(m for m in sys.modules if m in blocked or m.startswith(tuple(b + "." for b in blocked)))
    print(" ".join(loaded))
    """
)


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_a_domain_module_loads_nothing_of_the_servicer_side(module: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, module, *SERVICER_SIDE], capture_output=True, text=True, check=True, timeout=60
    )
    assert probe.stdout.split() == [], f"{module} loads {probe.stdout.strip()}"
