"""The two wheels as built: the client installs alone into a fresh virtualenv and works there without the server
side; the services' wheel holds the services and nothing of the harness, tests or tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"

pytestmark = pytest.mark.timeout(600)


def build(project: Path, out: Path) -> Path:
    # setuptools reuses its build/lib: what an earlier build put there would ride along in this wheel
    # (the rest of build/ holds other tools' outputs and stays)
    for stale in (project / "build" / "lib", *(project / "build").glob("bdist.*")):
        shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([str(UV), "build", "--wheel", "--quiet", "-o", str(out), str(project)], check=True, timeout=300)
    [wheel] = out.glob("*.whl")
    return wheel


def top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}


def stub_packages(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[1] for name in archive.namelist() if name.startswith("aigw/") and name.count("/") > 1}


def test_the_client_wheel_installs_alone_and_runs(tmp_path: Path) -> None:
    # neither the repository (cwd) nor `make test`'s PYTHONPATH may make the server side importable there
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheel = build(REPO / "client", tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(UV), "pip", "install", "--quiet", "--python", str(python), str(wheel)], check=True, timeout=300)

    installed = subprocess.run([str(UV), "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True)
    names = {line.split("==")[0].split(" @ ")[0].lower() for line in installed.stdout.split()}

    def away(*argv: str) -> subprocess.CompletedProcess[str]:
        """Runs in the temporary folder: the repository's own folders would otherwise be importable."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=alone)

    usage = away(str(venv / "bin" / "aigw"), "--help")
    sdk = away(str(python), "-c", "import aigw_client, aigw.router.v1.router_pb2_grpc; print(aigw_client.AigwClient.__name__)")
    server = away(str(python), "-c", "import aigw_server")

    assert top_level(wheel) == {"aigw", "aigw_client"}
    assert stub_packages(wheel) == {"admin", "common", "router"}, "the public contracts, none of the internal ones"
    assert (usage.returncode, sdk.stdout.strip()) == (0, "AigwClient"), usage.stderr + sdk.stderr
    assert "usage: aigw" in usage.stdout
    assert server.returncode != 0, "nothing of the server side comes with the client"
    assert not names & {"pymongo", "pymupdf", "supervisor", "httpx", "aigw-server", "psutil", "uvicorn"}, names


def test_the_services_wheel_holds_the_services_only(tmp_path: Path) -> None:
    wheel = build(REPO, tmp_path / "dist")

    assert top_level(wheel) == {"aigw_server"}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "aigw_server/edge/console/index.html" in names, "the console's files ship with the edge"
