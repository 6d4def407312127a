"""Server reflection that also resolves method symbols (`pkg.Service.Method`), as `grpcurl describe` asks for them.

protobuf's upb descriptor pool finds services, messages, fields and enums by name but raises KeyError
for a method's full name, so `grpcurl describe aigw.router.v1.RouterService.Chat` got "Symbol not
found" although the service itself was described.
"""

from __future__ import annotations

from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection


class MethodSymbolPool:
    """The default descriptor pool, with `FindFileContainingSymbol` falling back to the method's service."""

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool or descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            if not service_name:
                raise
            service = self._pool.FindServiceByName(service_name)  # KeyError when it is not a service either
            if method not in service.methods_by_name:
                raise KeyError(symbol) from None
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Registers reflection for `service_names` (plus the reflection service itself) on `server`."""
    pool = cast(descriptor_pool.DescriptorPool, MethodSymbolPool())  # duck-typed: reflection calls only Find* methods
    reflection.enable_server_reflection([*service_names, reflection.SERVICE_NAME], server, pool=pool)
