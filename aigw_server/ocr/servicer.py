"""OcrService and BackendService RPCs of an OCR backend: proto messages to domain requests and back; no logic of its own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypedDict

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw_server.ocr.backend import BackendView, LifecycleOutcome, OcrBackend
from aigw_server.ocr.resolution import mode_of
from aigw_server.ocr.results import Box, Line, OcrRequest, OutputFormat, PageResult
from aigw_server.runtime.enums import BACKEND_STATE_BY_WORD

Context = grpc.aio.ServicerContext[Message, Message]


def to_request(model: str, job: common_pb2.OcrJob) -> OcrRequest:
    """The domain request for a RecognizeRequest or StreamRecognizeRequest ("eng+deu" and "eng,deu" name two packs)."""
    markdown = job.output_format == common_pb2.OCR_OUTPUT_FORMAT_MARKDOWN
    return OcrRequest(
        document=job.document,
        model=model,
        mode=mode_of(job.resolution),
        languages=tuple(code for entry in job.languages for code in re.split(r"[+,\s]+", entry.lower()) if code),
        first_page=job.first_page,
        last_page=job.last_page,
        output_format=OutputFormat.MARKDOWN if markdown else OutputFormat.TEXT,
        include_layout=job.include_layout,
    )


def _box(box: Box) -> common_pb2.Box:
    return common_pb2.Box(x=box.x, y=box.y, width=box.width, height=box.height)


def _line(line: Line) -> common_pb2.OcrLine:
    words = [common_pb2.OcrWord(text=w.text, confidence=w.confidence, box=_box(w.box)) for w in line.words]
    return common_pb2.OcrLine(text=line.text, confidence=line.confidence, box=_box(line.box), words=words)


def to_page(page: PageResult) -> common_pb2.OcrPage:
    """The proto of one page's result."""
    return common_pb2.OcrPage(
        page=page.page,
        text=page.text,
        source=page.source.value,
        language=page.language,
        script=page.script,
        confidence=page.confidence,
        lines=[_line(line) for line in page.lines],
        width=page.width,
        height=page.height,
        elapsed_ms=page.elapsed_ms,
    )


def to_status(view: BackendView) -> common_pb2.BackendStatus:
    """The proto of the backend's status (model-server counters are unknown: -1)."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return common_pb2.BackendStatus(
        backend=view.backend,
        state=BACKEND_STATE_BY_WORD[view.state.value],
        loaded_models=list(view.loaded_models),
        available_models=list(view.available_models),
        in_flight=view.in_flight,
        capacity=view.capacity,
        server_running=-1,
        server_waiting=-1,
        kv_cache_usage=-1,
        prefix_cache_hit_rate=-1,
        engine=view.engine,
        updated_at=now,
        detail=view.detail,
        restarts=view.restarts,
        languages=list(view.languages),
    )


class OcrServicer(ocr_pb2_grpc.OcrServiceServicer):
    """Adapts OcrService RPCs to the backend."""

    def __init__(self, backend: OcrBackend) -> None:
        self.backend = backend

    async def Recognize(self, request: ocr_pb2.RecognizeRequest, context: Context) -> ocr_pb2.RecognizeResponse:
        async with self.backend.run(to_request(request.model, request.job)) as run, aclosing(run.results()) as results:
            pages = [to_page(page) async for page in results]
        result = common_pb2.OcrResult(
            pages=pages,
            text="\f".join(page.text for page in pages),
            document_type=run.document_type,
            page_count=run.page_count,
            engine=self.backend.engine.name,
            model=run.model,
        )
        return ocr_pb2.RecognizeResponse(result=result)

    async def StreamRecognize(
        self, request: ocr_pb2.StreamRecognizeRequest, context: Context
    ) -> AsyncIterator[ocr_pb2.StreamRecognizeResponse]:
        async with self.backend.run(to_request(request.model, request.job)) as run, aclosing(run.results()) as results:
            async for page in results:
                yield ocr_pb2.StreamRecognizeResponse(
                    page=to_page(page),
                    page_count=len(run.pages),
                    document_type=run.document_type,
                    engine=self.backend.engine.name,
                )


class OcrLifecycleServicer(backend_pb2_grpc.BackendServiceServicer):
    """Adapts the BackendService lifecycle contract to the OCR backend."""

    def __init__(self, backend: OcrBackend) -> None:
        self.backend = backend

    async def GetStatus(self, request: backend_pb2.GetStatusRequest, context: Context) -> backend_pb2.GetStatusResponse:
        return backend_pb2.GetStatusResponse(status=to_status(self.backend.status()))

    async def LoadModel(self, request: backend_pb2.LoadModelRequest, context: Context) -> backend_pb2.LoadModelResponse:
        return backend_pb2.LoadModelResponse(**_lifecycle(await self.backend.load(request.model)))

    async def UnloadModel(self, request: backend_pb2.UnloadModelRequest, context: Context) -> backend_pb2.UnloadModelResponse:
        return backend_pb2.UnloadModelResponse(**_lifecycle(await self.backend.unload(request.model)))

    async def SwitchModel(self, request: backend_pb2.SwitchModelRequest, context: Context) -> backend_pb2.SwitchModelResponse:
        return backend_pb2.SwitchModelResponse(**_lifecycle(await self.backend.switch(request.model)))

    async def SleepModel(self, request: backend_pb2.SleepModelRequest, context: Context) -> backend_pb2.SleepModelResponse:
        return backend_pb2.SleepModelResponse(**_lifecycle(await self.backend.sleep(request.level)))

    async def WakeModel(self, request: backend_pb2.WakeModelRequest, context: Context) -> backend_pb2.WakeModelResponse:
        return backend_pb2.WakeModelResponse(**_lifecycle(await self.backend.wake()))

    async def GetEngines(self, request: backend_pb2.GetEnginesRequest, context: Context) -> backend_pb2.GetEnginesResponse:
        """None: OCR engines (Tesseract in process, DeepSeek-OCR) are called through the OCR service."""
        return backend_pb2.GetEnginesResponse()


class _LifecycleFields(TypedDict):
    """The fields every lifecycle RPC's response shares."""

    status: common_pb2.BackendStatus
    outcome: str
    elapsed_ms: float


def _lifecycle(done: LifecycleOutcome) -> _LifecycleFields:
    return {"status": to_status(done.status), "outcome": done.outcome, "elapsed_ms": done.elapsed_ms}
