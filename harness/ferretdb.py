"""Build, start, health-check and stop the embedded FerretDB (MongoDB wire protocol on SQLite)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from aigw_server.runtime.datadir import socket_path, socket_uri

__all__ = [
    "FerretDBError",
    "FerretDBProcess",
    "binary_path",
    "ensure_built",
    "free_port",
    "free_ports",
    "socket_path",
    "socket_uri",
]

_TOOL_DIR = Path("tools") / "ferretdb"


class FerretDBError(RuntimeError):
    """FerretDB could not be built, started or stopped."""


def binary_path(repo_root: Path) -> Path:
    """Where tools/ferretdb/build.sh puts the binary."""
    return Path(repo_root) / _TOOL_DIR / "bin" / "ferretdb"


def ensure_built(repo_root: Path, *, timeout: float = 900.0) -> Path:
    """Return the FerretDB binary, running tools/ferretdb/build.sh first if it is missing."""
    binary = binary_path(repo_root)
    if os.access(binary, os.X_OK):
        return binary
    script = Path(repo_root) / _TOOL_DIR / "build.sh"
    result = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0 or not os.access(binary, os.X_OK):
        tail = (result.stdout + result.stderr)[-4000:]
        raise FerretDBError(f"{script} failed (exit {result.returncode}):\n{tail}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct unused TCP ports (held together while chosen, so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _socket_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))
            return True
    except OSError:
        return False


class FerretDBProcess:
    """One FerretDB child process serving ``data_dir`` (SQLite files) on a Unix socket, no TCP port."""

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        *,
        log_path: Path | None = None,
        log_level: str = "error",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = Path(binary)
        self.data_dir = Path(data_dir).resolve()
        self.socket_path = socket_path(self.data_dir)
        self.log_path = log_path if log_path is not None else self.data_dir / "ferretdb.log"
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """MongoDB connection string for this instance."""
        return socket_uri(self.socket_path)

    @property
    def sqlite_url(self) -> str:
        """The ``file:`` URL of the data directory, as FerretDB wants it (trailing slash)."""
        return "file:" + urllib.parse.quote(str(self.data_dir)) + "/"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line used to start FerretDB."""
        return [
            str(self.binary),
            f"-listen-unix={self.socket_path}",
            f"-sqlite-url={self.sqlite_url}",
            f"-log-level={self.log_level}",
        ]

    def start(self) -> None:
        """Start FerretDB and wait until it answers ``ping``."""
        if self.running:
            return
        if _socket_answers(self.socket_path):
            raise FerretDBError(f"{self.socket_path} is already in use")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Block until ``ping`` succeeds; raise FerretDBError on exit or timeout."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise FerretDBError(f"FerretDB exited with {code} at start:\n{self._log_tail()}")
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.uri,
                serverSelectionTimeoutMS=500,
                connectTimeoutMS=500,
                directConnection=True,
            )
            try:
                client.admin.command("ping")
                return
            except PyMongoError as exc:
                last_error = exc
            finally:
                client.close()
            time.sleep(0.1)
        raise FerretDBError(f"FerretDB not ready on {self.uri} after {timeout:.0f}s ({last_error}):\n{self._log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, wait ``stop_timeout`` seconds, then SIGKILL; return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL at once (simulates a crash); return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return self._reap()

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or, with ``hard``, kill) and start again on the same socket and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def _reap(self) -> int | None:
        code = self._proc.returncode if self._proc is not None else None
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def _log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
