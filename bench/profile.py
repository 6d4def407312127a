"""Where the CPU goes under load: cProfile of every service while REST clients drive `/api/chat`.

`python -m bench.profile --out build/profile` starts the local mesh (textgen attached to bench.upstream)
with `AIGW_PROFILE_DIR` set, so that every service profiles its whole run (see `aigw_server.runtime.server.serve`),
drives `POST /api/chat` (or `/v1/chat/completions`) with `wrk` for a warm-up and a measured period, stops
the mesh gracefully (which writes `<service>-<pid>.prof`) and prints each chosen service's functions by
own time. The profiles cover start-up and warm-up too; under load both are small next to the measured
period. cProfile slows Python code down about twofold, so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import tempfile
import time
from pathlib import Path

from aigw_server.runtime.auth import TokenSigner
from bench.run import JWT_SECRET, MAX_TOKENS, MESSAGES, MODEL, mesh_spec, upstream, wrk
from harness.ferretdb import free_port
from harness.mesh import Mesh


def top(path: Path, lines: int, sort: str) -> str:
    """The `lines` costliest functions of one profile, sorted by `sort` ("tottime" or "cumulative")."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(lines)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.profile", description=__doc__)
    parser.add_argument("--out", default="build/profile", help="directory for the .prof files")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--path", default="/api/chat", choices=("/api/chat", "/v1/chat/completions"))
    parser.add_argument("--services", default="edge,router,queue,textgen-upstream")
    parser.add_argument("--lines", type=int, default=30)
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.prof"):
        old.unlink()
    os.environ["AIGW_PROFILE_DIR"] = str(out)  # inherited by every supervised service
    up_port = free_port()
    with tempfile.TemporaryDirectory(prefix="aigw-profile-") as tmp, upstream(up_port):
        up_url = f"http://127.0.0.1:{up_port}"
        mesh = Mesh(mesh_spec(Path(tmp) / "data", up_url).write(Path(tmp) / "bench.yaml"))
        mesh.start(timeout=180)
        try:
            token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
            auth = {"Authorization": f"Bearer {token}"}
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
            url = f"{mesh.edge_url}{args.path}"
            wrk("warm-up", url, body, auth, args.clients, 3, "rest")
            began = time.perf_counter()
            run = wrk("profiled", url, body, auth, args.clients, args.seconds, "rest")
            print(f"{run.requests} requests ({run.errors} errors) in {time.perf_counter() - began:.1f} s, {run.rps:.0f}/s")
        finally:
            mesh.stop()
    for name in args.services.split(","):
        for path in sorted(out.glob(f"{name}-*.prof")):
            print(f"===== {path.name}")
            print(top(path, args.lines, args.sort))


if __name__ == "__main__":
    main()
