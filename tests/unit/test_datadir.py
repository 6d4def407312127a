"""The data dir is private, and one mesh at a time holds it; a lock left by a dead holder blocks nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aigw_server.runtime import datadir

# Another process takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from aigw_server.runtime import datadir
datadir.lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_private(tmp_path: Path) -> None:
    data = datadir.make_private(tmp_path / "a" / "data")
    assert mode(data) == 0o700


def test_an_open_data_dir_and_what_it_holds_are_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ferretdb").mkdir(parents=True)
    (data / "ferretdb" / "aigw.sqlite").write_text("rows")
    (data / "logs").mkdir()
    for path in (data, data / "ferretdb", data / "logs"):
        path.chmod(0o755)
    (data / "ferretdb" / "aigw.sqlite").chmod(0o644)
    datadir.make_private(data)
    datadir.make_contents_private(data)
    assert mode(data) == 0o700
    assert mode(data / "ferretdb") == 0o700
    assert mode(data / "ferretdb" / "aigw.sqlite") == 0o600


def test_a_sticky_shared_dir_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(datadir.DataDirError, match="shared with other users"):
        datadir.make_private(shared)


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(datadir.MeshAlreadyRunning, match=f"supervisord pid {holder.pid},"):
                datadir.lock(tmp_path)
        finally:
            holder.kill()
            holder.wait(10)
    fd = datadir.lock(tmp_path)  # the file is still there, the lock went with its holder
    try:
        assert (tmp_path / datadir.LOCK_FILE).read_text().startswith(f"supervisord pid {os.getpid()},")
        assert mode(tmp_path / datadir.LOCK_FILE) == 0o600
    finally:
        os.close(fd)
