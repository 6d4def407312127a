"""envoy/envoy.yaml parses strictly into Envoy's Bootstrap (xds-protos) and serves every annotated service."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from aigw_server.runtime.config import load_config

REPO = Path(__file__).resolve().parents[3]


def _load_generator() -> ModuleType:
    # `envoy` is also the xds-protos package, so the script is loaded from its file rather than imported.
    spec = importlib.util.spec_from_file_location("aigw_envoy_generate", REPO / "envoy" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@pytest.fixture(scope="module")
def descriptor_set() -> bytes:
    data: bytes = generate.DESCRIPTOR_SET.read_bytes()
    return data


@pytest.fixture
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(generate.OUTPUT.read_text())
    return loaded


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_committed_config_is_what_the_generator_makes(descriptor_set: bytes) -> None:
    expected = generate.render(generate.build(descriptor_set, load_config(generate.CONFIG, env={})))
    assert generate.OUTPUT.read_text() == expected, "envoy/envoy.yaml is stale: run python envoy/generate.py"


def test_config_parses_strictly_into_bootstrap_with_every_typed_config_resolved(config: dict[str, Any]) -> None:
    from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    bootstrap = generate.parse_strict(config)
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.Unpack(manager)
    transcoder = transcoder_pb2.GrpcJsonTranscoder()
    assert manager.http_filters[0].typed_config.Unpack(transcoder)
    assert transcoder.print_options.preserve_proto_field_names
    assert transcoder.print_options.always_print_primitive_fields
    assert transcoder.print_options.stream_sse_style_delimited
    assert transcoder.convert_grpc_status
    assert transcoder.max_request_body_size.value >= 11 * 1024 * 1024
    options = http_protocol_options_pb2.HttpProtocolOptions()
    router = next(c for c in bootstrap.static_resources.clusters if c.name == "router")
    assert router.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert router.health_checks[0].grpc_health_check.service_name == "aigw.router.v1.RouterService"


def test_admin_interface_listens_on_loopback_only(config: dict[str, Any]) -> None:
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    ready = config["static_resources"]["listeners"][1]
    routes = ready["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"] for r in routes] == [{"path": "/ready"}]


def test_a_misspelled_field_fails_validation(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    manager = hcm(broken)
    manager["stats_prefix"] = manager.pop("stat_prefix")
    with pytest.raises(json_format.ParseError, match="stats_prefix"):
        generate.parse_strict(broken)


def test_a_misspelled_field_inside_a_typed_config_fails_validation(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    options = hcm(broken)["http_filters"][0]["typed_config"]["print_options"]
    options["preserve_proto_field_name"] = options.pop("preserve_proto_field_names")
    with pytest.raises(json_format.ParseError, match="preserve_proto_field_name"):
        generate.parse_strict(broken)


def test_an_unknown_typed_config_type_fails_validation(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    hcm(broken)["http_filters"][1]["typed_config"]["@type"] = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Bufer"
    with pytest.raises((json_format.ParseError, TypeError)):
        generate.parse_strict(broken)


def test_every_annotated_service_is_transcoded_and_routed_to_its_cluster(config: dict[str, Any], descriptor_set: bytes) -> None:
    assert generate.consistency_problems(config, descriptor_set) == []
    assert hcm(config)["http_filters"][0]["typed_config"]["services"] == [
        "aigw.admin.v1.AdminService",
        "aigw.router.v1.RouterService",
    ]


def test_a_missing_cluster_fails_the_consistency_check(config: dict[str, Any], descriptor_set: bytes) -> None:
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"] = [c for c in broken["static_resources"]["clusters"] if c["name"] != "router"]
    generate.parse_strict(broken)
    problems = generate.consistency_problems(broken, descriptor_set)
    assert any("missing cluster router" in p for p in problems)


def test_an_untranscoded_service_and_a_timed_out_stream_fail_the_consistency_check(
    config: dict[str, Any], descriptor_set: bytes
) -> None:
    broken = copy.deepcopy(config)
    hcm(broken)["http_filters"][0]["typed_config"]["services"] = ["aigw.router.v1.RouterService"]
    stream = next(
        r for r in hcm(broken)["route_config"]["virtual_hosts"][0]["routes"] if r["match"].get("path", "").endswith("/StreamChat")
    )
    stream["route"]["timeout"] = "15s"
    assert generate.consistency_problems(broken, descriptor_set) == [
        "aigw.admin.v1.AdminService is not transcoded",
        "the stream /aigw.router.v1.RouterService/StreamChat has no route without a timeout",
    ]


def test_the_check_command_passes_on_the_committed_config() -> None:
    assert generate.main(["--check"]) == 0


def test_liveness_is_answered_by_envoy_itself(config: dict[str, Any]) -> None:
    routes = hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    live = next(r for r in routes if r["match"].get("path") == "/livez")
    assert routes.index(live) == 0, "before any route that could send it upstream"
    assert "route" not in live
    assert live["direct_response"] == {"status": 200, "body": {"inline_string": '{"status":"live"}'}}
