"""The supervisord config the launcher writes: no secret in it, private files, every program tied to supervisord."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from aigw_server.queue.store import database_uri
from aigw_server.runtime.config import parse_config
from aigw_server.runtime.lifeline import dying_with
from harness.ferretdb import socket_path, socket_uri
from harness.launcher import mesh_programs, prepare, supervisord_conf, tied_to

SECRET = "launcher-test-secret-" + "s" * 40


def test_the_config_holds_no_secret_and_ties_every_program_to_supervisord(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"JWT_SECRET": SECRET, "AIGW_ADMIN_PASSWORD": "bootstrap-password-1", "MONGODB_URI": "mongodb://u:pw@db/x"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    cfg = parse_config({"data_dir": str(tmp_path / "data")}, env=secrets)
    _, env = prepare(cfg)
    assert {k: env[k] for k in secrets} == secrets, "the programs get them through supervisord's environment"
    programs = tied_to(4242, mesh_programs(cfg, "/usr/bin/python3", Path("/opt/ferretdb")))
    conf = supervisord_conf(programs, tmp_path / "data")
    for secret in (SECRET, "bootstrap-password-1", "pw@db"):
        assert secret not in conf
    assert "umask=077" in conf
    assert conf.count("umask=077") == len(programs) + 1
    for program in programs:
        assert program.command[:6] == dying_with(4242, [], signal.SIGKILL), program.name
    assert {p.name for p in programs} >= {"queue", "admin", "router", "edge"}
    assert "environment=" not in conf.split("[program:queue]")[1].split("[program:")[0], "the queue needs no extra variable"


def test_the_embedded_store_listens_on_the_data_dirs_socket_only(tmp_path: Path) -> None:
    cfg = parse_config({"data_dir": str(tmp_path / "data")}, env={})
    ferretdb = next(p for p in mesh_programs(cfg, "/usr/bin/python3", Path("/opt/ferretdb")) if p.name == "ferretdb")
    assert f"-listen-unix={socket_path(tmp_path / 'data')}" in ferretdb.command
    assert not [arg for arg in ferretdb.command if arg.startswith("-listen-addr")]
    assert database_uri(cfg.database, cfg.data_path) == socket_uri(socket_path(tmp_path / "data")), "the queue's side"
    production = parse_config({"data_dir": str(tmp_path / "data")}, env={"MONGODB_URI": "mongodb://db:27017/"})
    assert database_uri(production.database, production.data_path) == "mongodb://db:27017/"
    assert not [p for p in mesh_programs(production, "/usr/bin/python3", None) if p.name == "ferretdb"]
