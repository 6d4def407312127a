"""TextgenService and BackendService RPCs of a textgen backend: proto in, backend call, proto out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.textgen.v1 import textgen_pb2, textgen_pb2_grpc
from aigw_server.runtime.enums import BACKEND_STATE_BY_WORD
from aigw_server.runtime.logs import request_id_var
from aigw_server.textgen.backend import BackendSnapshot, EngineInfo, TextgenBackend

Context = grpc.aio.ServicerContext[Message, Message]


def status_proto(snap: BackendSnapshot) -> common_pb2.BackendStatus:
    updated = Timestamp()
    updated.GetCurrentTime()
    return common_pb2.BackendStatus(
        backend=snap.backend,
        state=BACKEND_STATE_BY_WORD[snap.state.name.lower()],
        loaded_models=snap.loaded_models,
        available_models=snap.available_models,
        in_flight=snap.in_flight,
        capacity=snap.capacity,
        server_running=snap.server_running,
        server_waiting=snap.server_waiting,
        kv_cache_usage=snap.kv_cache_usage,
        prefix_cache_hit_rate=snap.prefix_cache_hit_rate,
        engine=snap.engine,
        updated_at=updated,
        detail=snap.detail,
        restarts=snap.restarts,
    )


def engine_proto(info: EngineInfo) -> backend_pb2.Engine:
    return backend_pb2.Engine(
        base_url=info.base_url,
        engine=info.engine,
        models=[
            backend_pb2.EngineModel(model=m.name, served_name=m.upstream_name, default_max_tokens=m.default_max_tokens)
            for m in info.models
        ],
        priority_scheduling=info.priority_scheduling,
        stream_usage=info.stream_usage,
        api_key=info.api_key,
        request_timeout_seconds=info.request_timeout_seconds,
        capacity=info.capacity,
    )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class TextgenServicer(textgen_pb2_grpc.TextgenServiceServicer):
    """Adapts the TextgenService protocol to one TextgenBackend."""

    def __init__(self, backend: TextgenBackend) -> None:
        self.backend = backend

    async def Generate(self, request: textgen_pb2.GenerateRequest, context: Context) -> textgen_pb2.GenerateResponse:
        rid = request.request_id or request_id_var.get()
        result = await self.backend.generate(request.model, request.chat, request.priority, rid)
        return textgen_pb2.GenerateResponse(result=result)

    async def StreamGenerate(
        self, request: textgen_pb2.StreamGenerateRequest, context: Context
    ) -> AsyncIterator[textgen_pb2.StreamGenerateResponse]:
        model = request.model
        rid = request.request_id or request_id_var.get()
        async for delta, finish_reason, usage in self.backend.stream(model, request.chat, request.priority, rid):
            yield textgen_pb2.StreamGenerateResponse(delta=delta, finish_reason=finish_reason, usage=usage, model=model)


class TextgenLifecycleServicer(backend_pb2_grpc.BackendServiceServicer):
    """Adapts the BackendService lifecycle contract to one TextgenBackend."""

    def __init__(self, backend: TextgenBackend) -> None:
        self.backend = backend

    def _status(self) -> common_pb2.BackendStatus:
        return status_proto(self.backend.snapshot())

    async def GetStatus(self, request: backend_pb2.GetStatusRequest, context: Context) -> backend_pb2.GetStatusResponse:
        return backend_pb2.GetStatusResponse(status=self._status())

    async def LoadModel(self, request: backend_pb2.LoadModelRequest, context: Context) -> backend_pb2.LoadModelResponse:
        start = time.perf_counter()
        outcome = await self.backend.load(request.model)
        return backend_pb2.LoadModelResponse(status=self._status(), outcome=outcome, elapsed_ms=_ms(start))

    async def UnloadModel(self, request: backend_pb2.UnloadModelRequest, context: Context) -> backend_pb2.UnloadModelResponse:
        start = time.perf_counter()
        outcome = await self.backend.unload(request.model, request.drain_timeout_seconds, request.force)
        return backend_pb2.UnloadModelResponse(status=self._status(), outcome=outcome, elapsed_ms=_ms(start))

    async def SwitchModel(self, request: backend_pb2.SwitchModelRequest, context: Context) -> backend_pb2.SwitchModelResponse:
        start = time.perf_counter()
        outcome = await self.backend.switch(request.model, request.drain_timeout_seconds, request.force)
        return backend_pb2.SwitchModelResponse(status=self._status(), outcome=outcome, elapsed_ms=_ms(start))

    async def SleepModel(self, request: backend_pb2.SleepModelRequest, context: Context) -> backend_pb2.SleepModelResponse:
        start = time.perf_counter()
        outcome = await self.backend.sleep(request.level)
        return backend_pb2.SleepModelResponse(status=self._status(), outcome=outcome, elapsed_ms=_ms(start))

    async def GetEngines(self, request: backend_pb2.GetEnginesRequest, context: Context) -> backend_pb2.GetEnginesResponse:
        return backend_pb2.GetEnginesResponse(engines=[engine_proto(e) for e in self.backend.engines()])

    async def WakeModel(self, request: backend_pb2.WakeModelRequest, context: Context) -> backend_pb2.WakeModelResponse:
        start = time.perf_counter()
        outcome = await self.backend.wake()
        return backend_pb2.WakeModelResponse(status=self._status(), outcome=outcome, elapsed_ms=_ms(start))
