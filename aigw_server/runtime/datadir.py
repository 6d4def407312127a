"""The local mesh's data dir: private to its owner, and held by one running mesh at a time."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
import time
import urllib.parse
from pathlib import Path

LOCK_FILE = "mesh.lock"
# The descriptor the lock lives on in supervisord: below 5, which supervisord keeps on a reload
# (it closes 5 and up), and supervisord closes 3 and up in the programs it starts.
LOCK_FD = 3
GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO
# The embedded FerretDB's only listener, a Unix socket in a private directory of the data dir.
SOCKET_DIR = "ferretdb-socket"
SOCKET_NAME = "ferretdb.sock"
_SUN_PATH_MAX = 107  # sun_path holds 108 bytes, the terminating NUL included


class DataDirError(RuntimeError):
    """The data dir cannot be used: shared with others, or held by a running mesh."""


class MeshAlreadyRunning(DataDirError):
    """Another mesh holds the data dir's lock."""


def make_private(path: Path) -> Path:
    """Creates `path` (mode 0700), or takes group and other access away from it when it already exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & GROUP_OTHER:
        if info.st_uid != os.getuid() or info.st_mode & stat.S_ISVTX:
            raise DataDirError(f"the data dir {path} is shared with other users and not ours to make private; choose another")
        path.chmod(0o700)
    return path


def make_contents_private(root: Path) -> None:
    """Takes group and other access away from everything under `root` (files older runs left readable)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if info.st_mode & GROUP_OTHER and not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid():
                path.chmod(stat.S_IMODE(info.st_mode) & ~GROUP_OTHER)


def lock(data: Path) -> int:
    """Takes the data dir's lock for this process (and what it execs into); returns the descriptor.

    The lock is the kernel's (flock), so it goes with the last process holding it, however that
    process ends: a lock file left behind by a crash blocks nothing. The file names the holder.
    """
    path = data / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "a process that has not said who it is"
        os.close(fd)
        raise MeshAlreadyRunning(
            f"another mesh is running on the data dir {data} ({holder}); stop it first, or set AIGW_DATA_DIR to another dir"
        ) from None
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"supervisord pid {os.getpid()}, started {started}\n".encode(), 0)
    return fd


def keep_across_exec(fd: int) -> int:
    """Moves the lock to LOCK_FD, inherited by the program this process execs next; returns LOCK_FD."""
    if fd != LOCK_FD:
        os.dup2(fd, LOCK_FD, inheritable=True)
        os.close(fd)
    os.set_inheritable(LOCK_FD, True)
    return LOCK_FD


def socket_path(data_dir: Path) -> Path:
    """The Unix socket the embedded FerretDB of ``data_dir`` listens on (its only listener).

    It lies in a private (0700) directory of the data dir. A Unix socket's path must fit in 108
    bytes, which a deep data dir (pytest's temporary dirs, for one) exceeds: then the directory is
    /tmp/aigw-<uid>-<hash of the data dir>, also 0700 and checked to be ours by FerretDB at start
    (tools/ferretdb/main.go refuses one that another user made). The path depends on the data dir
    alone, so the launcher and the queue agree on it without being told.
    """
    data = Path(data_dir).resolve()
    inside = data / SOCKET_DIR / SOCKET_NAME
    if len(os.fsencode(inside)) <= _SUN_PATH_MAX:
        return inside
    digest = hashlib.sha256(os.fsencode(data)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"aigw-{os.getuid()}-{digest}" / SOCKET_NAME


def socket_uri(path: Path) -> str:
    """The MongoDB connection string of a Unix socket (the path percent-encoded as the host)."""
    return "mongodb://" + urllib.parse.quote(str(path), safe="") + "/"
