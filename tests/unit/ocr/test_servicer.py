"""OcrService and BackendService of ocr, in process: proto ⇄ domain mapping, status codes, details.

The servicers run behind the servers' interceptor on an in-process context (tests/unit/servicer_calls.py),
over the real OcrBackend (documents, limits, page scheduling) with a scripted engine in Tesseract's place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2
from aigw_server.ocr.backend import OcrBackend
from aigw_server.ocr.languages import LanguageIdentification
from aigw_server.ocr.ocr_engine import EngineHealth, EngineState
from aigw_server.ocr.resolution import TESSERACT_RENDER, Mode, RenderSpec
from aigw_server.ocr.results import Box, Line, PageImage, Recognition, RecognizeOptions, Word
from aigw_server.ocr.servicer import OcrLifecycleServicer, OcrServicer
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import ModelConfig, parse_config
from tests.unit.ocr import samples
from tests.unit.servicer_calls import InProcessContext, InProcessService

OCR = ocr_pb2.DESCRIPTOR.services_by_name["OcrService"]
LIFECYCLE = backend_pb2.DESCRIPTOR.services_by_name["BackendService"]
CONFIG = {
    "models": {"scribe": {"kind": "ocr", "default_resolution": "small", "languages": ["eng", "deu"]}},
    "backends": [{"name": "ocr-0", "kind": "ocr", "engine": "tesseract", "models": ["scribe"], "capacity": 3, "workers": 1}],
}


class ScriptedEngine:
    """An OcrEngine that reads every page as "page <n>" and remembers the options it was asked with."""

    name = "scripted"
    concurrency = 1

    def __init__(self) -> None:
        self.model = ""
        self.asked: list[RecognizeOptions] = []

    def render_spec(self, mode: Mode) -> RenderSpec:
        return TESSERACT_RENDER[mode]

    def languages(self) -> frozenset[str]:
        return frozenset({"eng", "deu", "fra"})

    async def load(self, name: str, model: ModelConfig) -> str:
        self.model = name
        return f"{name} loaded"

    async def unload(self) -> str:
        self.model = ""
        return "unloaded"

    def health(self) -> EngineHealth:
        return EngineHealth(EngineState.READY if self.model else EngineState.IDLE, self.model, restarts=1)

    def on_change(self, callback: Callable[[], None]) -> None:
        return None

    async def recognize(self, page: PageImage, options: RecognizeOptions) -> Recognition:
        self.asked.append(options)
        width, height = page.image.size
        word = Word("page", 0.75, Box(1, 2, 30, 10))
        line = Line(f"page {page.number}", 0.75, Box(1, 2, 60, 10), (word,))
        return Recognition(f"page {page.number}", "eng", "Latin", 0.75, width, height, (line,) if options.include_layout else ())

    async def close(self) -> None:
        return None


class Served:
    """Both OCR servicers over one backend with a scripted engine."""

    def __init__(self) -> None:
        cfg = parse_config(CONFIG, env={})
        self.engine = ScriptedEngine()
        pool = WorkerPool(1)
        self.backend = OcrBackend(cfg, cfg.backend("ocr-0"), self.engine, pool, LanguageIdentification())
        self.ocr = InProcessService(OCR, OcrServicer(self.backend), "ocr")
        self.lifecycle = InProcessService(LIFECYCLE, OcrLifecycleServicer(self.backend), "ocr")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    served = Served()
    await served.backend.load()
    yield served
    await served.backend.close()


def png() -> bytes:
    return samples.encode(samples.text_image(["Hello"]))


def recognize(
    document: bytes,
    resolution: common_pb2.Resolution.ValueType = common_pb2.RESOLUTION_UNSPECIFIED,
    languages: tuple[str, ...] = (),
    include_layout: bool = False,
) -> ocr_pb2.RecognizeRequest:
    job = common_pb2.OcrJob(document=document, resolution=resolution, languages=languages, include_layout=include_layout)
    return ocr_pb2.RecognizeRequest(model="scribe", job=job)


def status_of(context: InProcessContext) -> status_pb2.Status:
    (details,) = [v for k, v in context.trailing_metadata_sent if k == "grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return status_pb2.Status.FromString(details)


async def test_recognize_maps_the_job_to_the_engine_and_the_page_back(served: Served) -> None:
    request = recognize(png(), resolution=common_pb2.RESOLUTION_LARGE, languages=("ENG+deu",), include_layout=True)

    reply = await served.ocr.unary("Recognize", request, InProcessContext())

    (options,) = served.engine.asked
    assert (options.mode, options.languages, options.include_layout) == (Mode.LARGE, ("eng", "deu"), True)
    assert isinstance(reply, ocr_pb2.RecognizeResponse)
    result = reply.result
    assert (result.document_type, result.page_count, result.engine, result.model, result.text) == (
        "png",
        1,
        "scripted",
        "scribe",
        "page 1",
    )
    (page,) = result.pages
    assert (page.page, page.source, page.language, page.script, page.confidence) == (1, "ocr", "eng", "Latin", 0.75)
    assert page.width > 0
    assert page.height > 0
    (line,) = page.lines
    assert (line.text, line.box.width, [(w.text, w.box.x, w.box.y) for w in line.words]) == ("page 1", 60, [("page", 1, 2)])


async def test_an_unspecified_resolution_takes_the_models_default(served: Served) -> None:
    await served.ocr.unary("Recognize", recognize(png()), InProcessContext())

    assert served.engine.asked[0].mode is Mode.SMALL


async def test_stream_recognize_sends_one_message_per_page_in_order(served: Served) -> None:
    document = samples.text_pdf([["First page of text for the layer."], ["Second page of text for the layer."]])

    replies = await served.ocr.stream("StreamRecognize", recognize(document), InProcessContext())

    pages = [
        (r.page.page, r.page.source, r.page_count, r.document_type, r.engine)
        for r in replies
        if isinstance(r, ocr_pb2.StreamRecognizeResponse)
    ]
    assert pages == [(1, "text_layer", 2, "pdf", "scripted"), (2, "text_layer", 2, "pdf", "scripted")]
    assert served.engine.asked == [], "a text layer is read, not recognised"


async def test_an_unknown_language_is_invalid_argument_naming_the_field(served: Served) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.ocr.unary("Recognize", recognize(png(), languages=("klingon",)), context)

    assert context.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "language klingon is not installed; installed: deu, eng, fra" in context.details()
    status = status_of(context)
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [v.field for v in bad_request.field_violations] == ["job.languages"]


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (recognize(b"just some text"), grpc.StatusCode.INVALID_ARGUMENT, "unsupported document type: the bytes are plain text"),
        (
            ocr_pb2.RecognizeRequest(model="other", job=common_pb2.OcrJob(document=b"%PDF-")),
            grpc.StatusCode.NOT_FOUND,
            "model 'other' is not served by backend ocr-0",
        ),
    ],
)
async def test_refusals_carry_their_status_code(
    served: Served, request_message: ocr_pb2.RecognizeRequest, code: grpc.StatusCode, message: str
) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.ocr.unary("Recognize", request_message, context)

    assert context.code() is code
    assert message in context.details()
    assert served.engine.asked == []


async def test_without_a_loaded_model_recognition_is_unavailable(served: Served) -> None:
    await served.lifecycle.unary("UnloadModel", backend_pb2.UnloadModelRequest(), InProcessContext())
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.ocr.stream("StreamRecognize", recognize(png()), context)

    assert context.code() is grpc.StatusCode.UNAVAILABLE
    assert "has no model loaded (idle)" in context.details()


async def test_get_status_maps_the_backend_and_marks_model_server_counters_unknown(served: Served) -> None:
    reply = await served.lifecycle.unary("GetStatus", backend_pb2.GetStatusRequest(), InProcessContext())

    assert isinstance(reply, backend_pb2.GetStatusResponse)
    status = reply.status
    assert (status.backend, status.engine, status.state, status.restarts) == (
        "ocr-0",
        "scripted",
        common_pb2.BACKEND_STATE_READY,
        1,
    )
    assert (list(status.loaded_models), list(status.available_models), status.capacity) == (["scribe"], ["scribe"], 3)
    assert list(status.languages) == ["deu", "eng", "fra"]
    assert (status.server_running, status.server_waiting, status.kv_cache_usage, status.prefix_cache_hit_rate) == (-1, -1, -1, -1)


async def test_unload_then_load_answer_the_outcome_and_the_new_state(served: Served) -> None:
    unloaded = await served.lifecycle.unary("UnloadModel", backend_pb2.UnloadModelRequest(), InProcessContext())
    loaded = await served.lifecycle.unary("LoadModel", backend_pb2.LoadModelRequest(model="scribe"), InProcessContext())

    assert isinstance(unloaded, backend_pb2.UnloadModelResponse)
    assert (unloaded.outcome, unloaded.status.state, list(unloaded.status.loaded_models)) == (
        "unloaded",
        common_pb2.BACKEND_STATE_IDLE,
        [],
    )
    assert isinstance(loaded, backend_pb2.LoadModelResponse)
    assert (loaded.outcome, loaded.status.state) == ("scribe loaded", common_pb2.BACKEND_STATE_READY)
    assert loaded.elapsed_ms >= 0


@pytest.mark.parametrize(
    ("rpc", "request_message", "code"),
    [
        ("SleepModel", backend_pb2.SleepModelRequest(level=1), grpc.StatusCode.FAILED_PRECONDITION),
        ("WakeModel", backend_pb2.WakeModelRequest(), grpc.StatusCode.FAILED_PRECONDITION),
        ("SwitchModel", backend_pb2.SwitchModelRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("LoadModel", backend_pb2.LoadModelRequest(model="other"), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_lifecycle_refusals_carry_their_status_code(
    served: Served, rpc: str, request_message: Message, code: grpc.StatusCode
) -> None:
    context = InProcessContext()

    with pytest.raises(grpc.aio.AbortError):
        await served.lifecycle.unary(rpc, request_message, context)

    assert context.code() is code


async def test_get_engines_names_none_since_ocr_is_called_through_its_service(served: Served) -> None:
    reply = await served.lifecycle.unary("GetEngines", backend_pb2.GetEnginesRequest(), InProcessContext())

    assert reply == backend_pb2.GetEnginesResponse()
