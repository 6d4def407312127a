"""`make run`: starts FerretDB (unless MONGODB_URI is set) and every service under supervisord, in the foreground."""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from aigw_server.runtime import datadir
from aigw_server.runtime.config import ConfigError, GatewayConfig, load_config
from aigw_server.runtime.lifeline import dying_with
from aigw_server.runtime.pki import ensure_mesh_pki
from harness.ferretdb import socket_path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Program:
    """One supervised process."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_seconds: int = 15


def ensure_secret(data_dir: Path, name: str) -> str:
    """Reads or creates a random secret kept in the data dir (mode 0600)."""
    path = data_dir / "secrets" / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def mesh_programs(cfg: GatewayConfig, python: str, ferretdb_binary: Path | None) -> list[Program]:
    """The processes of the local mesh, in start order."""
    data = cfg.data_path.resolve()
    programs: list[Program] = []
    if cfg.database.embedded:
        if ferretdb_binary is None:
            raise ConfigError("database.uri is empty but no FerretDB binary is available")
        db_dir = data / "ferretdb"
        db_dir.mkdir(parents=True, exist_ok=True)
        programs.append(
            Program(
                "ferretdb",
                [
                    str(ferretdb_binary),
                    f"-listen-unix={socket_path(data)}",
                    f"-sqlite-url=file:{db_dir}/",
                    "-log-level=warn",
                ],
            )
        )
    for svc in ("queue", "admin", "router"):
        programs.append(Program(svc, [python, "-m", f"aigw_server.{svc}"]))
    for backend in cfg.backends:
        programs.append(
            Program(
                f"{backend.kind}-{backend.name}",
                [python, "-m", f"aigw_server.{backend.kind}"],
                {"AIGW_BACKEND": backend.name},
                30,
            )
        )
    programs.append(Program("edge", [python, "-m", "aigw_server.edge"]))
    return programs


def tied_to(parent: int, programs: list[Program]) -> list[Program]:
    """The same programs, each started so that it dies with `parent` (supervisord) even if that is SIGKILLed.

    By SIGKILL: supervisord stops its programs gracefully itself when asked to, so the kernel's signal
    comes only when supervisord died without stopping them, and then nothing should linger (logs go
    nowhere, nobody restarts anything). Every service survives a kill by design, and what they run in
    turn is tied to them (a model server gets SIGTERM when its service dies, so its engine goes too).
    """
    return [replace(p, command=dying_with(parent, p.command, signal.SIGKILL)) for p in programs]


def supervisord_conf(programs: list[Program], data_dir: Path) -> str:
    """The supervisord configuration that runs `programs` and restarts any that dies.

    It holds no secret: those reach the programs through supervisord's own environment. The umask
    (inherited from the launcher, and set for each program) keeps every file the mesh writes (logs,
    database files, models) private to its owner.
    """
    logs = data_dir / "logs"
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={data_dir / 'supervisord.pid'}",
        "loglevel=info",
        "umask=077",
        "",
        "[unix_http_server]",
        f"file={data_dir / 'supervisor.sock'}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{data_dir / 'supervisor.sock'}",
        "",
    ]
    for priority, prog in enumerate(programs, start=1):
        env_line = ",".join(f'{k}="{v.replace(chr(34), "")}"' for k, v in sorted(prog.env.items()))
        lines += [
            f"[program:{prog.name}]",
            f"command={shlex.join(prog.command)}",
            f"directory={REPO}",
            f"priority={priority}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=1000",
            f"stopwaitsecs={prog.stop_seconds}",
            "stopsignal=TERM",
            "umask=077",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (prog.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=3",
            *([f"environment={env_line}"] if env_line else []),
            "",
        ]
    return "\n".join(lines)


def prepare(cfg: GatewayConfig) -> tuple[Path, dict[str, str]]:
    """Creates the generated secrets and the logs dir; returns the conf path and the programs' environment."""
    data = cfg.data_path.resolve()
    datadir.make_private(data / "logs")
    env = {
        "PYTHONUNBUFFERED": "1",
        "AIGW_CONFIG": os.path.abspath(cfg.source) if cfg.source else "",
        "AIGW_DATA_DIR": str(data),
        "PYTHONPATH": f"{REPO}:{REPO / 'gen'}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if cfg.mesh_tls.mode == "mtls" and not cfg.mesh_tls.dir:
        ensure_mesh_pki(cfg.tls_path.resolve())
    if not cfg.auth.jwt_secret and "HS256" in cfg.auth.algorithms:
        env["JWT_SECRET"] = ensure_secret(data, "jwt_secret")
    for key in ("JWT_SECRET", "MONGODB_URI", "AIGW_ADMIN_PASSWORD", "AIGW_PROFILE_DIR", "PATH", "HOME", "LANG"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    for name, value in os.environ.items():
        if name.startswith("AIGW_") and "__" in name:
            env[name] = value
    return data / "supervisord.conf", env


def ensure_local_models(cfg: GatewayConfig) -> None:
    """Generates the tiny local model for every model whose path lies under the data dir and is missing."""
    from tools.make_tiny_model import make_tiny_model

    data = cfg.data_path.resolve()
    for model in cfg.models.values():
        if model.kind == "chat" and model.path:
            path = Path(model.path).resolve()
            if path.is_relative_to(data) and not (path / "config.json").exists():
                make_tiny_model(path)


def write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` readable by the owner only (0600), whatever mode an older file had."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def claim_data_dir(cfg: GatewayConfig) -> int:
    """Makes the data dir private and takes its lock (exits naming the running mesh when another holds it)."""
    data = cfg.data_path.resolve()
    try:
        datadir.make_private(data)
        fd = datadir.lock(data)
    except datadir.DataDirError as exc:
        raise SystemExit(f"aigw: {exc}") from None
    datadir.make_contents_private(data)
    return fd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aigw-run", description=__doc__)
    parser.add_argument("--print-config", action="store_true", help="print the supervisord config and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
    except ConfigError as exc:
        raise SystemExit(f"aigw: invalid configuration: {exc}") from None
    os.umask(0o077)
    data = cfg.data_path.resolve()
    lock_fd = None if args.print_config else claim_data_dir(cfg)
    conf_path, env = prepare(cfg)
    binary = None
    if cfg.database.embedded:
        from harness.ferretdb import ensure_built

        binary = ensure_built(REPO)
    ensure_local_models(cfg)
    # The launcher execs supervisord, so its pid is the supervisor's: the programs die with it.
    programs = tied_to(os.getpid(), mesh_programs(cfg, sys.executable, binary))
    conf = supervisord_conf(programs, data)
    if args.print_config or lock_fd is None:
        print(conf)
        return
    write_private(conf_path, conf)
    print(f"aigw: starting {len(programs)} processes; logs in {data / 'logs'}", flush=True)
    supervisord = str(Path(sys.executable).parent / "supervisord")
    datadir.keep_across_exec(lock_fd)
    os.execve(supervisord, [supervisord, "-n", "-c", str(conf_path)], {**os.environ, **env})


if __name__ == "__main__":
    main()
