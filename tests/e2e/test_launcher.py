"""The launcher brings every service to SERVING, and its supervisor restarts one killed with SIGKILL."""

from __future__ import annotations

import signal

import httpx
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aigw_common.mesh import Mesh


def reflected_services(mesh: Mesh, program: str) -> list[str]:
    with mesh.open(program) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        return [s.name for r in replies for s in r.list_services_response.service]


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
