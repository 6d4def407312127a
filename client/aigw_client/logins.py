"""Saved logins of the aigw CLI: `credentials.json` (mode 0600) under AIGW_CONFIG_HOME or ~/.config/aigw."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aigw_client.values import TokenInfo

CREDENTIALS_FILE = "credentials.json"


class CredentialsFileError(ValueError):
    """The credentials file exists but cannot be used; the message names it."""


@dataclass(frozen=True)
class SavedLogin:
    """A login kept between CLI runs, with the gateway it belongs to."""

    token: TokenInfo
    router_address: str = ""
    admin_address: str = ""


def config_home(env: Mapping[str, str]) -> Path:
    """AIGW_CONFIG_HOME, else $XDG_CONFIG_HOME/aigw, else ~/.config/aigw."""
    if env.get("AIGW_CONFIG_HOME"):
        return Path(env["AIGW_CONFIG_HOME"])
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "aigw"
    return Path.home() / ".config" / "aigw"


def credentials_path(env: Mapping[str, str]) -> Path:
    return config_home(env) / CREDENTIALS_FILE


def load_login(env: Mapping[str, str]) -> SavedLogin | None:
    """The saved login, or None when there is none."""
    path = credentials_path(env)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsFileError(f"cannot read {path}: {exc}; run `aigw login` again") from None
    if not isinstance(data, dict) or not isinstance(data.get("token"), dict) or not data["token"].get("access_token"):
        raise CredentialsFileError(f"{path} holds no login; run `aigw login` again")
    token = TokenInfo.from_dict(data["token"])
    return SavedLogin(token, str(data.get("router_address", "")), str(data.get("admin_address", "")))


def save_login(login: SavedLogin, env: Mapping[str, str]) -> Path:
    """Writes the login atomically, readable by the owner only (the directory is made 0700)."""
    path = credentials_path(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"token": login.token.to_dict(), "router_address": login.router_address, "admin_address": login.admin_address}
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)  # created 0600, whatever the umask
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def delete_login(env: Mapping[str, str]) -> bool:
    """Removes the saved login; False when there was none."""
    try:
        credentials_path(env).unlink()
    except FileNotFoundError:
        return False
    return True
