"""A command started through the lifeline dies with the process that started it, even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from aigw_server.runtime.lifeline import EXIT_PARENT_GONE, dying_with

# A parent that starts `sleep` through the lifeline, says the child's pid, and waits to be killed.
PARENT = """
import subprocess, sys
from aigw_server.runtime.lifeline import dying_with
child = subprocess.Popen(dying_with(__import__("os").getpid(), ["sleep", "120"], int(sys.argv[1])), start_new_session=True)
print(child.pid, flush=True)
child.wait()
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def command_of(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


@pytest.mark.parametrize("death_signal", [signal.SIGTERM, signal.SIGKILL])
def test_the_child_gets_its_signal_when_its_parent_is_sigkilled(death_signal: signal.Signals) -> None:
    with subprocess.Popen([sys.executable, "-c", PARENT, str(int(death_signal))], stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            deadline = time.monotonic() + 10
            while command_of(child) != "sleep" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert command_of(child) == "sleep", "the lifeline becomes the command (same pid)"
            parent.kill()
            parent.wait(10)
            deadline = time.monotonic() + 5
            while alive(child) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(child)
        finally:
            parent.kill()
            if alive(child):
                os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_does_not_start() -> None:
    not_my_parent = 1
    done = subprocess.run(dying_with(not_my_parent, ["true"]), check=False)
    assert done.returncode == EXIT_PARENT_GONE


def test_a_command_that_cannot_run_is_named() -> None:
    done = subprocess.run(dying_with(os.getpid(), ["/nonexistent/engine"]), capture_output=True, text=True, check=False)
    assert done.returncode == 127
    assert "cannot run '/nonexistent/engine'" in done.stderr
