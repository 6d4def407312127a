"""Config loading: variable expansion, environment overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw_server.runtime.config import ConfigError, expand_vars, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_expansion_uses_default_when_unset_or_empty() -> None:
    assert expand_vars("${A:-x}", {}) == "x"
    assert expand_vars("${A:-x}", {"A": ""}) == "x"
    assert expand_vars("${A:-x}", {"A": "y"}) == "y"
    assert expand_vars("a-${B}-c", {"B": "b"}) == "a-b-c"
    assert expand_vars("${B}", {}) == ""


def test_values_are_typed_after_expansion() -> None:
    cfg = parse_config({"queue": {"max_waiting": "${W:-7}", "timeout": "${T:-2.5}"}}, {"W": "12"})
    assert cfg.queue.max_waiting == 12
    assert cfg.queue.timeout == 2.5


def test_env_overrides_and_well_known_names() -> None:
    env = {"AIGW_QUEUE__MAX_WAITING": "3", "MONGODB_URI": "mongodb://db:27017", "JWT_SECRET": "k" * 40, "AIGW_DATA_DIR": "/tmp/x"}
    cfg = parse_config({}, env)
    assert cfg.queue.max_waiting == 3
    assert cfg.database.uri == "mongodb://db:27017"
    assert not cfg.database.embedded
    assert cfg.auth.jwt_secret == "k" * 40
    assert cfg.data_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"queue": {"max_waitin": 1}}, r"queue\.max_waitin: unknown key"),
        ({"queue": {"max_waiting": "many"}}, r"queue\.max_waiting: expected an integer"),
        ({"queue": {"max_waiting": -1}}, r"queue\.max_waiting: must be >= 0"),
        ({"routing": {"policy": "random"}}, r"routing\.policy: 'random' is not one of"),
        ({"auth": {"algorithms": ["none"]}}, r"'none' is never allowed"),
        ({"services": {"queue": {"port": 50051}}}, r"port 50051 is also used by router"),
        ({"models": {"a/b": {}}}, r"models\.a/b: names use"),
        ({"models": {"m": {"kind": "chat"}}, "backends": [{"name": "b", "kind": "ocr", "models": ["m"]}]}, r"is a chat model"),
        ({"backends": [{"name": "b", "models": ["missing"]}]}, r"'missing' is not defined under models"),
        ({"models": {"m": {}}, "backends": [{"name": "b", "mode": "attach", "models": ["m"]}]}, r"url: required"),
        (
            {"mesh_tls": {"mode": "plaintext"}, "services": {"queue": {"host": "0.0.0.0"}}},
            r"mesh_tls\.mode: plaintext .* loopback",
        ),
        ({"mesh_tls": {"mode": "plaintext"}, "backends": [{"name": "b", "address": "gpu-0:50053"}]}, r"backends\[0\]\.address"),
        ({"mesh_tls": {"mode": "off"}}, r"mesh_tls\.mode: 'off' is not one of"),
        ({"server": {"trusted_proxies": ["10.0.0.0/33"]}}, r"server\.trusted_proxies: '10\.0\.0\.0/33'"),
        ({"services": {"admin": {"mesh_port": 50051}}}, r"port 50051 is also used by router"),
    ],
)
def test_invalid_configs_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, {})


@pytest.mark.parametrize("name", ["config.yaml", "offline.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "config" / name, env={})
    assert cfg.services.router.port == 50051
    assert cfg.server.port == 8080
    assert {b.kind for b in cfg.backends} == {"textgen", "ocr"}
    assert cfg.queue.max_waiting == 10
    assert cfg.auto_switch.pattern_window_days == 7


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
