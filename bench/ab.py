"""A/B of two source trees in one run: CPU per request of every process, and throughput, under the same load.

`python -m bench.ab --base DIR` starts the local mesh twice, once from DIR (for example a commit unpacked
with `git archive <commit> | tar -x -C DIR`) and once from this tree, side by side, each attached to its
own fast upstream (bench/upstream.py). It then drives `POST /api/chat` (or another path) with `wrk` on one
mesh and then the other, `--rounds` times, so that whatever else the machine does falls on both alike,
and reports for each tree the median over rounds of the CPU milliseconds each process spent per request
and of the requests per second. CPU per request is the measure to compare on a shared machine: latency
and throughput move with the neighbours' load, CPU per request much less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aigw_server.runtime.auth import TokenSigner
from bench.report import emit
from bench.run import JWT_SECRET, MAX_TOKENS, MESSAGES, MODEL, REPO, cpu_per_request, cpu_seconds, mesh_spec, upstream, wrk
from harness.ferretdb import binary_path, free_port
from harness.mesh import Mesh


def start_mesh(tree: Path, data: Path, up_url: str) -> Mesh:
    """The mesh of `tree` (its launcher and services run that tree's code) on fresh ports and data."""
    mesh = Mesh(mesh_spec(data, up_url).write(data.parent / f"{data.name}.yaml"))
    Path(mesh.cfg.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "AIGW_CONFIG": str(mesh.config_path), "PYTHONPATH": f"{tree}:{tree / 'gen'}"}
    env.pop("AIGW_PROFILE_DIR", None)
    out = os.open(data.parent / f"{data.name}-launcher.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(out, "ab") as log:
        mesh.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.launcher"],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    mesh.wait_ready(180)
    return mesh


def median_cpu(rounds: list[dict[str, float]]) -> dict[str, float]:
    out = {name: round(statistics.median(r[name] for r in rounds), 3) for name in rounds[0]}
    out["all"] = round(statistics.median(sum(r.values()) for r in rounds), 3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.ab", description=__doc__)
    parser.add_argument("--base", required=True, help="the other source tree (A); this tree is B")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--path", default="/api/chat", choices=("/api/chat", "/v1/chat/completions"))
    parser.add_argument("--out", default="", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    trees = {"A": Path(args.base).resolve(), "B": REPO}
    ferretdb = binary_path(trees["A"])
    if not ferretdb.exists():  # an unpacked commit lacks the built binary (it is not in git)
        ferretdb.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary_path(REPO), ferretdb)
    cpu: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    rps: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="aigw-ab-") as tmp, ExitStack() as stack:
        meshes: dict[str, Mesh] = {}
        for label, tree in trees.items():
            port = free_port()
            stack.enter_context(upstream(port))
            meshes[label] = start_mesh(tree, Path(tmp) / label, f"http://127.0.0.1:{port}")
            stack.callback(meshes[label].stop)
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        for mesh in meshes.values():
            token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
            wrk("warm-up", f"{mesh.edge_url}{args.path}", body, {"Authorization": f"Bearer {token}"}, args.clients, 3, "rest")
        for _ in range(args.rounds):
            for label, mesh in meshes.items():
                token, _ = TokenSigner(mesh.cfg.auth, JWT_SECRET).issue_access("admin", "user")
                auth = {"Authorization": f"Bearer {token}"}
                before = cpu_seconds(mesh)
                run = wrk(label, f"{mesh.edge_url}{args.path}", body, auth, args.clients, args.seconds, "rest")
                used = cpu_per_request(before, cpu_seconds(mesh), run)
                cpu[label].append({k: v for k, v in used.items() if k not in ("admin", "ocr-tesseract-0")})
                rps[label].append(run.rps)
    report: dict[str, Any] = {
        "command": "python -m bench.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "A": {"tree": str(trees["A"]), "cpu_ms_per_request": median_cpu(cpu["A"]), "rps": round(statistics.median(rps["A"]), 1)},
        "B": {"tree": str(trees["B"]), "cpu_ms_per_request": median_cpu(cpu["B"]), "rps": round(statistics.median(rps["B"]), 1)},
        "rounds": {"cpu": cpu, "rps": rps},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
