"""deploy/k8s keeps the trust model: default-deny network policies that open only the edges of the
architecture, the store reachable by the queue alone, and every aigw pod holding its own identity."""

from __future__ import annotations

from typing import Any

import pytest

from aigw_server.runtime.pki import IDENTITIES
from tests.unit.deploy.helpers import K8S, containers, documents, k8s_objects, of_kind, production_config, workloads

OBJECTS = k8s_objects()
WORKLOADS = {w["metadata"]["name"]: w for w in workloads()}
POLICIES = of_kind("NetworkPolicy")


def pod_name(workload: dict[str, Any]) -> str:
    name: str = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    return name


def selects(selector: dict[str, Any], name: str) -> bool:
    """Whether a podSelector (matchLabels or an `In` matchExpression on the name label) picks pods named `name`."""
    if not selector:
        return True
    labels = selector.get("matchLabels", {})
    if labels and labels.get("app.kubernetes.io/name") != name:
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["key"] == "app.kubernetes.io/name" and expr["operator"] == "In" and name not in expr["values"]:
            return False
    return True


def allowed_from(target: str, port: int) -> set[str]:
    """Which pods (by name) may connect to `target` on `port`; "*" when anyone may."""
    sources: set[str] = set()
    for policy in POLICIES:
        if not selects(policy["spec"]["podSelector"], target):
            continue
        for rule in policy["spec"].get("ingress", []):
            if port not in {p["port"] for p in rule.get("ports", [])}:
                continue
            peers = rule.get("from")
            if not peers:
                sources.add("*")
                continue
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    sources |= {pod_name(w) for w in WORKLOADS.values() if selects(peer["podSelector"], pod_name(w))}
                elif "namespaceSelector" in peer:
                    sources.add("namespace:" + str(peer["namespaceSelector"]["matchLabels"]))
    return sources


def test_ingress_is_denied_by_default() -> None:
    deny = [p for p in POLICIES if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]]
    assert deny
    assert "ingress" not in deny[0]["spec"]


def test_the_store_is_reachable_by_the_queue_alone() -> None:
    assert allowed_from("mongo", 27017) == {"queue", "mongo"}


def test_only_the_services_that_call_the_queue_reach_it() -> None:
    assert allowed_from("queue", 50052) == {"router", "admin", "textgen", "ocr", "ocr-tesseract"}


@pytest.mark.parametrize(("target", "port"), [("textgen", 50053), ("ocr", 50054), ("ocr-tesseract", 50054)])
def test_backends_are_reached_by_router_and_admin_only(target: str, port: int) -> None:
    assert allowed_from(target, port) == {"router", "admin"}


def test_only_envoy_is_public_and_it_alone_reaches_router_and_admin() -> None:
    assert allowed_from("envoy", 8080) == {"*"}
    cfg = production_config()
    for svc in ("router", "admin"):
        endpoint = cfg.endpoint(svc)
        assert allowed_from(svc, endpoint.mesh_port) == {"envoy"}
    for name in WORKLOADS:
        if name != "envoy":
            for container in containers(WORKLOADS[name]):
                for port in container.get("ports", []):
                    assert "*" not in allowed_from(name, port["containerPort"]), (name, port)


def test_every_identity_has_a_certificate_from_the_mesh_ca() -> None:
    certificates = {c["spec"]["commonName"]: c for c in of_kind("Certificate") if not c["spec"].get("isCA")}
    assert set(certificates) == set(IDENTITIES)
    for identity, cert in certificates.items():
        assert cert["spec"]["secretName"] == f"aigw-tls-{identity}"
        assert identity in cert["spec"]["dnsNames"]
        assert cert["spec"]["issuerRef"]["name"] == "aigw-mesh-ca"


@pytest.mark.parametrize(
    ("workload", "identity"),
    [
        ("queue", "queue"),
        ("router", "router"),
        ("admin", "admin"),
        ("textgen", "textgen"),
        ("ocr", "ocr"),
        ("ocr-tesseract", "ocr"),
        ("envoy", "edge"),
    ],
)
def test_each_pod_mounts_its_own_identity_privately(workload: str, identity: str) -> None:
    pod = WORKLOADS[workload]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    secrets = {s["secret"]["name"]: s["secret"]["items"] for s in volume["projected"]["sources"]}
    paths = {i["path"] for i in secrets[f"aigw-tls-{identity}"]}
    assert paths == {f"{identity}.crt", f"{identity}.key", "ca.crt"}
    assert set(secrets) <= {f"aigw-tls-{identity}", "aigw-tls-probe"}, "a pod holds another service's identity"
    assert volume["projected"]["defaultMode"] & 0o007 == 0, "keys readable by others"
    main = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert mounts["tls"] == str(production_config().tls_path)


def test_production_runs_with_service_identity() -> None:
    assert production_config().mesh_tls.mode == "mtls"


def test_the_chat_engine_takes_a_key_from_the_secret_and_only_routers_reach_its_api() -> None:
    textgen = WORKLOADS["textgen"]
    pod = {c["name"]: c for c in containers(textgen)}
    engine_key = {"secretKeyRef": {"name": "aigw-secrets", "key": "VLLM_API_KEY"}}
    vllm_env = {e["name"]: e.get("valueFrom") for e in pod["vllm"]["env"]}
    assert vllm_env["VLLM_API_KEY"] == engine_key
    assert not any("--api-key" in str(arg) for arg in [*pod["vllm"].get("command", []), *pod["vllm"]["args"]])
    textgen_env = {e["name"]: e.get("valueFrom") for e in pod["textgen"]["env"]}
    backend = production_config().backend("textgen-0")
    assert textgen_env[backend.api_key_env] == engine_key
    # The engine's port: routers (direct calls) and Prometheus (/metrics); textgen is in the pod.
    assert allowed_from("textgen", 8000) == {"router", "namespace:{'kubernetes.io/metadata.name': 'monitoring'}"}
    template = documents(K8S / "secret.template.yaml")
    assert "VLLM_API_KEY" in next(d for d in template if d["metadata"]["name"] == "aigw-secrets")["stringData"]
