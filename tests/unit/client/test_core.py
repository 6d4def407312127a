"""The client's I/O-free decisions: where it connects, with which credential, when it retries, how it reads arguments."""

from __future__ import annotations

import pytest

from aigw.admin.v1 import admin_pb2
from aigw_client.calls import config_patch, parse_languages, parse_pages
from aigw_client.errors import Conflict, RateLimited, Unavailable
from aigw_client.rpc import (
    DEFAULT_ADMIN_ADDRESS,
    DEFAULT_ROUTER_ADDRESS,
    RetryPolicy,
    resolve_credentials,
    resolve_settings,
)
from aigw_client.values import TokenInfo


def settings(address: str | None = None, admin: str | None = None, env: dict[str, str] | None = None) -> tuple[str, str]:
    s = resolve_settings(address, admin, client_id=None, priority=None, timeout=30, retry=None, tls=None, env=env or {})
    return s.router_address, s.admin_address


def test_defaults_are_the_local_mesh_ports() -> None:
    assert settings() == (DEFAULT_ROUTER_ADDRESS, DEFAULT_ADMIN_ADDRESS) == ("127.0.0.1:50051", "127.0.0.1:50055")


def test_one_given_address_is_a_gateway_serving_both_apis() -> None:
    assert settings("gw:8443") == ("gw:8443", "gw:8443")
    assert settings(env={"AIGW_GRPC_ADDRESS": "gw:8443"}) == ("gw:8443", "gw:8443")


def test_an_admin_address_wins_and_arguments_beat_the_environment() -> None:
    env = {"AIGW_GRPC_ADDRESS": "r:1", "AIGW_ADMIN_ADDRESS": "a:2"}
    assert settings(env=env) == ("r:1", "a:2")
    assert settings("x:3", env=env) == ("x:3", "a:2")
    assert settings("x:3", "y:4", env=env) == ("x:3", "y:4")
    assert settings(env={"AIGW_ADMIN_ADDRESS": "a:2"}) == (DEFAULT_ROUTER_ADDRESS, "a:2")


def test_tls_client_id_and_retry_settings() -> None:
    s = resolve_settings(None, None, client_id=None, priority="HIGH", timeout=5, retry=True, tls=None, env={"AIGW_TLS": "yes"})
    assert s.tls
    assert s.priority == "high"
    assert s.retry == RetryPolicy()
    s = resolve_settings(
        None, None, client_id=None, priority=None, timeout=5, retry=False, tls=False, env={"AIGW_CLIENT_ID": "c"}
    )
    assert not s.tls
    assert s.client_id == "c"
    assert s.retry is None


def test_credential_precedence() -> None:
    env = {"AIGW_TOKEN": "env-token", "AIGW_API_KEY": "env-key"}
    assert resolve_credentials("t", None, env) == (TokenInfo("t"), "")
    assert resolve_credentials(None, "k", env) == (None, "k")
    assert resolve_credentials(None, None, env) == (TokenInfo("env-token"), "")
    assert resolve_credentials(None, None, {"AIGW_API_KEY": "env-key"}) == (None, "env-key")
    assert resolve_credentials(None, None, {}) == (None, "")


def test_retry_policy_honours_retry_after_and_bounds() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.2, max_backoff=0.3, max_retry_after=10)
    assert policy.delay(RateLimited("full", retry_after=2.0), 1) == 2.0
    assert policy.delay(RateLimited("full", retry_after=11.0), 1) is None
    assert policy.delay(RateLimited("full", retry_after=2.0), 3) is None
    assert policy.delay(Conflict("stale"), 1) is None
    backoff = policy.delay(Unavailable("down"), 2)
    assert backoff is not None
    assert 0.15 <= backoff <= 0.3


@pytest.mark.parametrize(
    ("pages", "expected"),
    [(None, (0, 0)), ("", (0, 0)), ("2", (2, 2)), ("1-3", (1, 3)), (" 4 - ", (4, 0)), (5, (5, 5)), ((2, 6), (2, 6))],
)
def test_page_ranges(pages: str | int | tuple[int, int] | None, expected: tuple[int, int]) -> None:
    assert parse_pages(pages) == expected


def test_languages() -> None:
    assert parse_languages("eng, deu") == ["eng", "deu"]
    assert parse_languages("eng+fra") == ["eng", "fra"]
    assert parse_languages(["rus"]) == ["rus"]
    assert parse_languages(None) == []


def test_config_patch_types_and_errors() -> None:
    current = admin_pb2.ModelConfig(version=2)
    current.default_params.max_tokens = 32
    patch = config_patch(current, {"enabled": "off", "timeout": "60", "max_attempts": 2, "seed": "7"})
    assert patch.HasField("enabled")
    assert not patch.enabled
    assert patch.timeout_seconds == 60
    assert patch.max_attempts == 2
    assert patch.default_params.seed == 7
    assert patch.default_params.max_tokens == 32
    untouched = config_patch(current, {"max_waiting": "0"})
    assert untouched.HasField("max_waiting")
    assert not untouched.HasField("default_params")
    with pytest.raises(ValueError, match="max_concurrent"):
        config_patch(current, {"max_concurrent": "many"})
    with pytest.raises(ValueError, match="enabled"):
        config_patch(current, {"enabled": "maybe"})
    with pytest.raises(ValueError, match="gundam"):
        config_patch(current, {"default_resolution": "huge"})


def test_token_info_round_trips_through_a_dict() -> None:
    info = TokenInfo("a", "r", 10.0, 20.0, "admin", "alice")
    assert TokenInfo.from_dict({**info.to_dict(), "unknown": 1}) == info
