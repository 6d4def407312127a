"""Compiles the test-only edgetest proto with grpc_tools.protoc into a directory: modules and a descriptor set."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import google.api
import grpc_tools  # type: ignore[import-untyped]
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO = "edgetest/v1/edgetest.proto"
SERVICE = "edgetest.v1.EdgeTestService"


@dataclass(frozen=True)
class EdgeTestProtos:
    """The compiled test service: its descriptor set (with imports and source info) and generated modules."""

    descriptor_set: bytes
    pb2: ModuleType
    pb2_grpc: ModuleType


def include_dirs() -> list[str]:
    """The test protos, google/api (googleapis-common-protos) and the well-known types (grpc_tools)."""
    googleapis = Path(google.api.__file__).resolve().parents[2]
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(HERE), str(googleapis), str(well_known)]


def compile_edgetest(out: Path) -> EdgeTestProtos:
    """Runs protoc once into `out` and imports the generated modules from there."""
    descriptor = out / "edgetest.binpb"
    args = ["protoc", *(f"-I{d}" for d in include_dirs())]
    args += [f"--python_out={out}", f"--grpc_python_out={out}", f"--descriptor_set_out={descriptor}"]
    args += ["--include_imports", "--include_source_info", str(HERE / PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb2 = importlib.import_module("edgetest.v1.edgetest_pb2")
    pb2_grpc = importlib.import_module("edgetest.v1.edgetest_pb2_grpc")
    return EdgeTestProtos(descriptor.read_bytes(), pb2, pb2_grpc)
