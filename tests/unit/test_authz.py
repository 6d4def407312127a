"""The service-identity policy: one entry per RPC of the mesh, each naming who may call it."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from aigw_server.edge.service import descriptor_set_path
from aigw_server.runtime import authz


def mesh_methods() -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set_path().read_bytes())
    return {
        f"/{f.package}.{s.name}/{m.name}"
        for f in files.file
        if f.package.startswith("aigw.") and not f.package.startswith("aigw.edgetest")
        for s in f.service
        for m in s.method
    }


def test_every_rpc_of_the_mesh_has_an_entry_and_every_entry_an_rpc() -> None:
    methods = mesh_methods()
    listed = {m for m in authz.POLICY if m.startswith("/aigw.")}
    assert methods - listed == set(), "RPCs nobody may call (add them to authz.POLICY)"
    assert listed - methods == set(), "policy entries for RPCs that do not exist"


def test_internal_services_are_closed_to_callers_without_a_certificate() -> None:
    for method, callers in authz.POLICY.items():
        if method.startswith(("/aigw.queue.", "/aigw.textgen.", "/aigw.ocr.", "/aigw.backend.")):
            assert authz.PUBLIC not in callers, method
            assert authz.PROBE not in callers, method


def test_the_rules_the_trust_model_promises() -> None:
    queue = "/aigw.queue.v1."
    for rpc in ("Submit", "AcquireJob", "Heartbeat", "CompleteJob", "FailJob", "ReleaseJob"):
        assert authz.POLICY[f"{queue}QueueService/{rpc}"] == {authz.ROUTER}
    for rpc in ("CreateUser", "UpdateUser", "DeleteUser", "CreateApiKey", "RevokeApiKey", "ListUsers"):
        assert authz.POLICY[f"{queue}IdentityService/{rpc}"] == {authz.ADMIN}
    assert authz.POLICY[f"{queue}ModelConfigService/UpdateModelConfig"] == {authz.ADMIN}
    for method, callers in authz.POLICY.items():
        if method.startswith(("/aigw.textgen.", "/aigw.ocr.", "/aigw.backend.")):
            assert callers <= {authz.ROUTER, authz.ADMIN}, method
    lifecycle = "/aigw.backend.v1.BackendService/"
    assert authz.POLICY[f"{lifecycle}GetStatus"] == {authz.ROUTER, authz.ADMIN}
    for rpc in ("LoadModel", "UnloadModel", "SwitchModel", "SleepModel", "WakeModel"):
        assert authz.POLICY[f"{lifecycle}{rpc}"] == {authz.ADMIN}
    # Engine URLs and keys: the router only, not even the admin service.
    assert authz.POLICY[f"{lifecycle}GetEngines"] == {authz.ROUTER}


def test_unknown_methods_and_identities_are_refused() -> None:
    assert not authz.allowed("/aigw.queue.v1.QueueService/Nope", authz.ROUTER)
    assert not authz.allowed("/aigw.queue.v1.QueueService/Submit", "unknown:router")
    assert authz.identity_of({"x509_common_name": [b"router"]}) == authz.ROUTER
    assert authz.identity_of({"x509_common_name": [b"mallory"]}) == "unknown:mallory"
    assert authz.identity_of({}) == authz.PUBLIC
