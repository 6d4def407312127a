"""The Kubernetes deployment and its monitoring overlay build with kustomize, as the docs tell operators to apply them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.helpers import DEPLOY, K8S

KUBECTL = shutil.which("kubectl")


def build(root: Path) -> list[dict[str, Any]]:  # Any: YAML documents of mixed values
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_base_and_the_monitoring_overlay_build() -> None:
    base = build(K8S)
    overlay = build(DEPLOY / "k8s-monitoring")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in base}
    assert ("StatefulSet", "textgen") in kinds
    # The overlay is the base plus its scrape, with the autoscaler patched onto vLLM's queue.
    assert {(d["kind"], d["metadata"]["name"]) for d in overlay} >= kinds
    assert any(d["kind"] == "PodMonitor" for d in overlay)
