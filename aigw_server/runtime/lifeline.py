"""Runs a command so that it dies with a given parent process, even when that parent is SIGKILLed.

`dying_with(parent, argv)` is the command line to start instead of `argv`: this file, run by the same
interpreter with `-I -S` (standard library only, so no site or project import can slow or break it),
asks the kernel (PR_SET_PDEATHSIG, kept across exec) to send it a signal when its parent dies, checks
that the parent is still the one named (closing the race where the parent died before prctl ran),
and then becomes `argv` (same pid, so supervisors, process groups and signals see the real command).

The signal is SIGTERM by default, so that what it becomes can stop its own children in turn (vLLM its
engine-core processes, which outlive a SIGKILLed API server); a parent whose children hold nothing
that a kill would leave behind may ask for SIGKILL, which cannot be slowed or ignored. A trampoline
instead of a `preexec_fn` keeps Python code (and gRPC's fork handlers) out of the forked child of a
multi-threaded parent.

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


def dying_with(parent: int, argv: Sequence[str], death_signal: signal.Signals = signal.SIGTERM) -> list[str]:
    """`argv` run so that it gets `death_signal` when process `parent` (which must start it) dies."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(parent), str(int(death_signal)), *argv]


def main(args: Sequence[str]) -> int:
    """`PARENT_PID SIGNAL COMMAND [ARG...]`: arms the death signal, then execs COMMAND (returns only on failure)."""
    if len(args) < 3 or not args[0].isdigit() or not args[1].isdigit():
        sys.stderr.write("usage: lifeline.py PARENT_PID SIGNAL COMMAND [ARG...]\n")
        return 64
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(args[1])) != 0:
            sys.stderr.write(f"lifeline: prctl failed: {os.strerror(ctypes.get_errno())}\n")
            return 71
    if os.getppid() != int(args[0]):
        return EXIT_PARENT_GONE
    try:
        os.execvp(args[2], list(args[2:]))
    except OSError as exc:
        sys.stderr.write(f"cannot run {args[2]!r}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
