"""The buf curl commands of docs/admin.md work against the admin service through server reflection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import ADMIN_PASSWORD, Mesh, mesh, raw_config

pytestmark = pytest.mark.timeout(120)

BUF = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "buf")
SERVICE = "aigw.admin.v1.AdminService"


@pytest.fixture
async def gw(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    async with mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as running:
        yield running


async def buf_curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        BUF,
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_list_methods_login_and_an_authorised_call(gw: Mesh) -> None:
    url = f"http://{gw.admin_address}"
    code, methods = await buf_curl("--list-methods", url)
    assert code == 0, methods
    assert f"{SERVICE}/IssueToken" in methods.split()
    assert f"{SERVICE}/SetAutoSwitch" in methods.split()

    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD})
    code, issued = await buf_curl("-d", body, f"{url}/{SERVICE}/IssueToken")
    assert code == 0, issued
    token = json.loads(issued)["accessToken"]

    code, users = await buf_curl("-H", f"authorization: Bearer {token}", f"{url}/{SERVICE}/ListUsers")
    assert code == 0, users
    assert [u["username"] for u in json.loads(users)["users"]] == ["admin"]

    code, refused = await buf_curl(f"{url}/{SERVICE}/ListUsers")
    assert code != 0
    assert "unauthenticated" in refused
