"""The local mesh's data dir: private to its owner, and held by one running mesh at a time."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

LOCK_FILE = "mesh.lock"
# The descriptor the lock lives on in supervisord: below 5, which supervisord keeps on a reload
# (it closes 5 and up), and supervisord closes 3 and up in the programs it starts.
LOCK_FD = 3
GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


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
