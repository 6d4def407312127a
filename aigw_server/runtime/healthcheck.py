"""Health probe: `python -m aigw_server.runtime.healthcheck HOST:PORT [--service NAME] [--tls-dir DIR --server ID]`.

Exits 0 only when SERVING. The queue, textgen and ocr ports require a client certificate of the
mesh: give `--tls-dir` (the directory of ca.crt and the identities) and `--server` (the identity
the port belongs to); the probe presents the `probe` identity, which may call health and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aigw_server.runtime.authz import MeshTls

PROBE_IDENTITY = "probe"


def open_channel(address: str, tls: MeshTls | None = None, server: str = "") -> grpc.Channel:
    """A blocking channel for one probe: plaintext, or mTLS as `tls` to the identity `server`."""
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.channel_credentials(), options=[("grpc.ssl_target_name_override", server)])


def check(address: str, service: str = "", timeout: float = 3.0, tls: MeshTls | None = None, server: str = "") -> str:
    """The standard gRPC health answer ("SERVING", "NOT_SERVING", …), or the reason it could not be had."""
    with open_channel(address, tls, server) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigw_server.runtime.healthcheck", description=__doc__)
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="gRPC service name (default: the server as a whole)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--tls-dir", default="", help="directory of ca.crt and probe.crt/probe.key (mTLS ports)")
    parser.add_argument("--server", default="", help="identity of the server behind an mTLS port (queue, textgen, ocr, ...)")
    args = parser.parse_args(argv)
    tls = MeshTls.load(Path(args.tls_dir), PROBE_IDENTITY) if args.tls_dir else None
    if tls is not None and not args.server:
        parser.error("--server is required with --tls-dir")
    status = check(args.address, args.service, args.timeout, tls, args.server)
    if status == "SERVING":
        return 0
    sys.stderr.write(f"{args.address} {args.service or '(server)'}: {status}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
