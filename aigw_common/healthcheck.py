"""Container health probe: `python -m aigw_common.healthcheck HOST:PORT [--service NAME]` exits 0 only when SERVING."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """The standard gRPC health answer ("SERVING", "NOT_SERVING", …), or the reason it could not be had."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigw_common.healthcheck", description=__doc__)
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="gRPC service name (default: the server as a whole)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    status = check(args.address, args.service, args.timeout)
    if status == "SERVING":
        return 0
    sys.stderr.write(f"{args.address} {args.service or '(server)'}: {status}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
