"""The launcher as `make run` uses it: all SERVING, restarts, one mesh per data dir, nothing left behind or readable by others."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from harness.ferretdb import socket_path
from harness.mesh import REPO, Mesh
from harness.mesh_config import Auth
from tests.e2e.conftest import mesh_spec
from tests.helpers import connect_as_other_user, tcp_listeners

# What `make run` leaves to be generated: no JWT secret and no admin password from the environment.
NO_SECRETS_GIVEN = {"JWT_SECRET": "", "AIGW_ADMIN_PASSWORD": ""}
pytestmark = pytest.mark.timeout(420)  # the first test includes the mesh's start (a model server on 2 busy cores)
CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Mesh]:
    """The whole mesh with generated secrets, started once for this module (its last test kills it)."""
    root = tmp_path_factory.mktemp("launcher")
    spec = replace(mesh_spec(root / "data", tiny_model_dir), auth=Auth(jwt_secret="", admin_password=""))
    running = Mesh(spec.write(root / "config.yaml"), dict(NO_SECRETS_GIVEN))
    try:
        running.start(timeout=240)
        yield running
    finally:
        running.stop()


def reflected_services(mesh: Mesh, program: str) -> list[str]:
    with mesh.open(program) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        return [s.name for r in replies for s in r.list_services_response.service]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(root: int) -> set[int]:
    """Every live process below `root`, at any depth."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {p for p in found if alive(p)}


def launch(mesh: Mesh, timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs a second launcher on `mesh`'s config and data dir, as `make run` would."""
    env = {**os.environ, **mesh.env, "AIGW_CONFIG": str(mesh.config_path)}
    return subprocess.run(
        [sys.executable, "-m", "harness.launcher"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_every_service_serves_health_and_reflection(mesh: Mesh) -> None:
    addresses = mesh.grpc_addresses()
    assert set(addresses) == {"queue", "admin", "router", "textgen-cpu-0", "ocr-tesseract-0"}
    for name, address in addresses.items():
        assert mesh.health(name, address) == "SERVING", name
    listed = {s for name in addresses for s in reflected_services(mesh, name)}
    for svc in (
        "router.v1.RouterService",
        "queue.v1.QueueService",
        "textgen.v1.TextgenService",
        "ocr.v1.OcrService",
        "admin.v1.AdminService",
    ):
        assert f"aigw.{svc}" in listed
    assert httpx.get(f"{mesh.edge_url}/health", timeout=5).status_code == 200


def test_a_killed_service_is_restarted(mesh: Mesh) -> None:
    old = mesh.kill("router", signal.SIGKILL)
    seconds = mesh.wait_restarted("router", old, timeout=60)
    assert mesh.health("router", mesh.grpc_addresses()["router"]) == "SERVING"
    assert seconds < 60


def test_a_second_mesh_on_the_same_data_dir_refuses_at_once_naming_the_first(mesh: Mesh) -> None:
    assert mesh.proc is not None
    before = mesh.pids()
    conf = (Path(mesh.cfg.data_dir) / "supervisord.conf").read_text()
    started = time.monotonic()
    second = launch(mesh, timeout=60)
    assert time.monotonic() - started < 15
    assert second.returncode != 0
    assert f"another mesh is running on the data dir {Path(mesh.cfg.data_dir).resolve()}" in second.stderr
    assert f"supervisord pid {mesh.proc.pid}," in second.stderr
    assert mesh.pids() == before
    assert (Path(mesh.cfg.data_dir) / "supervisord.conf").read_text() == conf


def test_no_secret_or_user_data_is_readable_by_others_or_logged(mesh: Mesh) -> None:
    data = Path(mesh.cfg.data_dir).resolve()
    password = (data / "secrets" / "admin_password").read_text().strip()
    jwt_secret = (data / "secrets" / "jwt_secret").read_text().strip()
    with httpx.Client(base_url=mesh.edge_url, timeout=60) as http:
        login = http.post("/auth/token", data={"username": "admin", "password": password})
        assert login.status_code == 200, login.text
        tokens = login.json()
        admin = {"authorization": f"Bearer {tokens['access_token']}"}
        created = http.post("/admin/api-keys", json={"name": "runtime"}, headers=admin).json()
        key_id, api_key = created["key"]["key_id"], created["api_key"]
        assert api_key.startswith(f"aigw_{key_id}_")
        chat = http.post("/api/chat", json=CHAT, headers={"authorization": f"Bearer {api_key}"})
        assert chat.status_code == 200, chat.text
        assert chat.json()["status"] == "SUCCEEDED"
        assert http.post("/api/chat", json=CHAT, headers=admin).status_code == 200
    time.sleep(1.0)  # lets the services' log lines of those calls reach their files

    readable = [
        f"{p} {stat.filemode(p.lstat().st_mode)}"
        for p in [data, *data.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    assert not readable, "open to group or others:\n" + "\n".join(readable)
    assert any((data / "ferretdb").iterdir()), "the database files are among those checked"

    secrets = {
        "admin password": password,
        "JWT secret": jwt_secret,
        "API key secret": api_key.removeprefix(f"aigw_{key_id}_"),
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
    }
    texts = [data / "supervisord.conf", data / "launcher.out", *(p for p in (data / "logs").rglob("*") if p.is_file())]
    assert len(texts) >= 9, texts
    for path in texts:
        text = path.read_text(errors="replace")
        for what, value in secrets.items():
            assert value not in text, f"{what} found in {path}"
    admin_log = (data / "logs" / "admin.log").read_text()
    assert str(data / "secrets" / "admin_password") in admin_log, "the log says where the generated password is"


def test_chats_go_to_the_model_server_directly_not_through_textgens_generate(mesh: Mesh) -> None:
    """routing.direct_engines (default): the router calls `transformers serve` itself; textgen only supervises it."""
    password = (Path(mesh.cfg.data_dir) / "secrets" / "admin_password").read_text().strip()
    with httpx.Client(base_url=mesh.edge_url, timeout=60) as http:
        token = http.post("/auth/token", data={"username": "admin", "password": password}).json()["access_token"]
        for _ in range(2):
            chat = http.post("/api/chat", json=CHAT, headers={"authorization": f"Bearer {token}"})
            assert chat.status_code == 200, chat.text
            assert chat.json()["status"] == "SUCCEEDED"
    metrics = httpx.get(f"http://127.0.0.1:{mesh.cfg.services.textgen.metrics_port}/metrics", timeout=10).text
    served = [line for line in metrics.splitlines() if line.startswith("aigw_rpc_requests_total")]
    assert any('method="GetEngines"' in line for line in served), "the router asked textgen where the engine is"
    assert not [line for line in served if 'method="Generate"' in line or 'method="StreamGenerate"' in line]


def test_the_store_listens_on_a_private_socket_and_no_tcp_port(mesh: Mesh) -> None:
    pid = mesh.pids()["ferretdb"]
    assert pid
    assert tcp_listeners(pid) == [], "FerretDB listens on TCP"
    path = socket_path(Path(mesh.cfg.data_dir))
    folder = path.parent.lstat()
    assert stat.S_ISDIR(folder.st_mode)
    assert folder.st_uid == os.getuid()
    assert stat.S_IMODE(folder.st_mode) == 0o700
    sock = path.lstat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600, stat.filemode(sock.st_mode)
    if os.getuid() == 0:  # as another local user (root can become one): refused
        assert connect_as_other_user(path).startswith("refused")
    with httpx.Client(base_url=mesh.edge_url, timeout=60) as http:
        assert http.get("/health").json()["components"]["queue"] == "serving", "the queue reaches the store"


def assert_a_stopped_model_is_called_stopped_and_the_mesh_stays_ready(mesh: Mesh) -> None:
    password = (Path(mesh.cfg.data_dir) / "secrets" / "admin_password").read_text().strip()
    with httpx.Client(base_url=mesh.edge_url, timeout=60) as http:
        token = http.post("/auth/token", data={"username": "admin", "password": password}).json()["access_token"]
        stopped = http.post("/admin/models/tiny-chat/stop", headers={"authorization": f"Bearer {token}"})
        assert stopped.status_code == 200, stopped.text
        deadline = time.monotonic() + 20
        while (health := http.get("/health")).json().get("components", {}).get("textgen:cpu-0") != "stopped":
            assert time.monotonic() < deadline, health.text
            time.sleep(0.2)
    assert health.status_code == 200, "the OCR backend still serves: the mesh is ready"
    assert health.json()["status"] == "ok", "a model stopped on purpose is not a fault"
    assert health.json()["components"] == {
        "queue": "serving",
        "admin": "serving",
        "textgen:cpu-0": "stopped",
        "ocr:tesseract-0": "serving",
    }


@pytest.mark.timeout(480)
def test_killing_the_supervisor_takes_every_process_with_it_and_the_next_mesh_starts_cleanly(mesh: Mesh) -> None:
    assert mesh.proc is not None
    supervisor = mesh.proc.pid
    programs = mesh.pids()
    children = descendants(supervisor)
    assert set(programs.values()) <= children
    assert len(children) > len(programs), "the textgen model server is among them"
    mesh.proc.kill()
    mesh.proc.wait(10)
    killed = time.monotonic()
    while (left := {p for p in children if alive(p)}) and time.monotonic() - killed < 15:
        time.sleep(0.1)
    assert not left, f"still running {time.monotonic() - killed:.1f}s after supervisord was killed: {sorted(left)}"

    again = Mesh(mesh.config_path, dict(mesh.env))
    try:
        again.start(timeout=300)
        with again.supervisor() as proxy:
            states = {p["name"]: p["statename"] for p in proxy.supervisor.getAllProcessInfo()}
        assert set(states.values()) == {"RUNNING"}, states
        assert set(states) == set(programs)
        assert httpx.get(f"{again.edge_url}/health", timeout=5).status_code == 200
        log = (Path(again.cfg.data_dir) / "logs" / "supervisord.log").read_text()
        assert "not expected" not in log.rsplit("supervisord started with pid", 1)[1]
        assert_a_stopped_model_is_called_stopped_and_the_mesh_stays_ready(again)
    finally:
        again.stop()
