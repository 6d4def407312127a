"""Runs a command so that it dies with a given parent process, even when that parent is SIGKILLed.

`dying_with(parent, argv)` is the command line to start instead of `argv`: this file, run by the same
interpreter with `-I -S` (standard library only, so no site or project import can slow or break it),
asks the kernel (PR_SET_PDEATHSIG, kept across exec) to send it SIGTERM when its parent dies, checks
that the parent is still the one named (closing the race where the parent died before prctl ran),
and then becomes `argv` (same pid, so supervisors, process groups and signals see the real command).

SIGTERM rather than SIGKILL, so that what it becomes can stop its own children in turn (a service its
model server, vLLM its engine-core processes). A trampoline instead of a `preexec_fn` keeps Python
code (and gRPC's fork handlers) out of the forked child of a multi-threaded parent.

Linux only: elsewhere the command runs without the guarantee.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 70


def dying_with(parent: int, argv: Sequence[str]) -> list[str]:
    """`argv` run so that it gets SIGTERM when process `parent` (which must start it) dies."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(parent), *argv]


def main(args: Sequence[str]) -> int:
    """`PARENT_PID COMMAND [ARG...]`: arms the death signal, then execs COMMAND (returns only on failure)."""
    if len(args) < 2 or not args[0].isdigit():
        sys.stderr.write("usage: lifeline.py PARENT_PID COMMAND [ARG...]\n")
        return 64
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            sys.stderr.write(f"lifeline: prctl failed: {os.strerror(ctypes.get_errno())}\n")
            return 71
    if os.getppid() != int(args[0]):
        return EXIT_PARENT_GONE
    try:
        os.execvp(args[1], list(args[1:]))
    except OSError as exc:
        sys.stderr.write(f"cannot run {args[1]!r}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
