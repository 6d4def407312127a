"""The CLI's saved login: where it lives, who may read it, and what a damaged file does."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aigw_client.logins import CredentialsFileError, SavedLogin, config_home, delete_login, load_login, save_login
from aigw_client.values import TokenInfo


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_home_precedence(tmp_path: Path) -> None:
    assert config_home({"AIGW_CONFIG_HOME": str(tmp_path / "a"), "XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "a"
    assert config_home({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "aigw"
    assert config_home({}) == Path.home() / ".config" / "aigw"


def test_saved_login_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    env = {"AIGW_CONFIG_HOME": str(tmp_path / "cfg")}
    login = SavedLogin(TokenInfo("access", "refresh", 100.0, 200.0, "admin", "alice"), "gw:1", "gw:2")
    path = save_login(login, env)
    assert path == tmp_path / "cfg" / "credentials.json"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert load_login(env) == login
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]


def test_saving_over_a_readable_file_makes_it_owner_only(tmp_path: Path) -> None:
    env = {"AIGW_CONFIG_HOME": str(tmp_path)}
    (tmp_path / "credentials.json").write_text("{}")
    (tmp_path / "credentials.json").chmod(0o644)
    save_login(SavedLogin(TokenInfo("t")), env)
    assert mode(tmp_path / "credentials.json") == 0o600


def test_missing_damaged_and_deleted_logins(tmp_path: Path) -> None:
    env = {"AIGW_CONFIG_HOME": str(tmp_path)}
    assert load_login(env) is None
    (tmp_path / "credentials.json").write_text("{not json")
    with pytest.raises(CredentialsFileError, match="aigw login"):
        load_login(env)
    (tmp_path / "credentials.json").write_text('{"token": {}}')
    with pytest.raises(CredentialsFileError, match="no login"):
        load_login(env)
    assert delete_login(env)
    assert not delete_login(env)
