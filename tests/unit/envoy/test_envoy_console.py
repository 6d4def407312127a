"""In production Envoy answers the console's files itself, exactly as the embedded edge does: same bytes, same headers."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from aigw_server.edge.console_files import CONSOLE_DIR, SECURITY_HEADERS, load_files

REPO = Path(__file__).resolve().parents[3]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aigw_envoy_generate_console", REPO / "envoy" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _routes() -> list[dict[str, Any]]:
    bootstrap = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]


def _body(route: dict[str, Any]) -> bytes:
    body = route["direct_response"]["body"]
    return body["inline_string"].encode() if "inline_string" in body else base64.b64decode(body["inline_bytes"])


def test_every_console_file_is_answered_with_its_bytes_type_and_security_headers() -> None:
    console = (r for r in _routes() if "direct_response" in r and r["match"].get("path", "").startswith("/ui"))
    routes = {r["match"]["path"]: r for r in console}
    files = load_files(CONSOLE_DIR)
    assert set(files) == set(routes)
    for url, found in files.items():
        route = routes[url]
        assert _body(route) == found.body, url
        headers = {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}
        assert headers["content-type"] == found.content_type
        for key, value in SECURITY_HEADERS:
            assert headers[key] == value


def test_the_rest_of_ui_is_not_found_and_api_routes_come_first() -> None:
    routes = _routes()
    fallback = next(r for r in routes if r["match"].get("prefix") == "/ui/")
    assert fallback["direct_response"]["status"] == 404
    assert routes.index(fallback) == len(routes) - 1
    redirect = next(r for r in routes if r["match"].get("path") == "/ui")
    assert redirect["redirect"]["path_redirect"] == "/ui/"


def test_a_console_route_is_checked_like_the_others() -> None:
    generate = _load_generator()
    bootstrap = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())
    assert generate.consistency_problems(bootstrap, generate.DESCRIPTOR_SET.read_bytes()) == []
    generate.parse_strict(bootstrap)
