"""The ocr service in process (create_server on port 0) with a real gRPC client and the real Tesseract."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw_server.ocr.deepseek import DeepSeekOcrEngine
from aigw_server.ocr.service import OcrService, build
from aigw_server.runtime.config import parse_config
from aigw_server.runtime.server import create_server
from tests.helpers import free_port
from tests.unit.ocr import samples

TIMEOUT = 60
MAX_CER = 0.05
FAKE_VLLM = Path(__file__).resolve().parents[2] / "unit" / "ocr" / "fake_vllm.py"
TESSERACT = {
    "models": {"tesseract": {"kind": "ocr", "default_resolution": "base", "languages": ["eng", "deu", "fra", "rus", "ell"]}},
    "backends": [
        {"name": "tesseract-0", "kind": "ocr", "engine": "tesseract", "models": ["tesseract"], "capacity": 2, "workers": 2}
    ],
}


@dataclass
class Ocr:
    """A running ocr service and a client of it."""

    service: OcrService
    stub: ocr_pb2_grpc.OcrServiceAsyncStub
    health: health_pb2_grpc.HealthStub
    lifecycle: backend_pb2_grpc.BackendServiceAsyncStub

    async def recognize(self, document: bytes, **job: Any) -> common_pb2.OcrResult:
        request = ocr_pb2.RecognizeRequest(job=common_pb2.OcrJob(document=document, **job))
        reply = await self.stub.Recognize(request, timeout=TIMEOUT)
        return reply.result

    async def refused(self, document: bytes, **job: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.recognize(document, **job)
        return caught.value

    async def serving(self) -> str:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service="aigw.ocr.v1.OcrService"), timeout=5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def running(raw: dict[str, Any], tmp_path: Path) -> AsyncIterator[Ocr]:
    service = build(parse_config({**raw, "data_dir": str(tmp_path)}, env={}))
    server, port, health = await create_server(service, "127.0.0.1:0")
    await server.start()
    await service.start(health)
    await service.wait_loaded()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Ocr(
            service,
            ocr_pb2_grpc.OcrServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            backend_pb2_grpc.BackendServiceStub(channel),
        )
    await server.stop(None)
    await service.stop()


@pytest.fixture
async def ocr(tmp_path: Path) -> AsyncIterator[Ocr]:
    async for client in running(TESSERACT, tmp_path):
        yield client


async def until(ocr: Ocr, health: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await ocr.serving() != health:
        assert asyncio.get_running_loop().time() < deadline, f"health never became {health}"
        await asyncio.sleep(0.1)


def joined(lines: list[str]) -> str:
    return "\n".join(lines)


async def test_image_with_layout(ocr: Ocr) -> None:
    image = samples.text_image(samples.ENGLISH)
    result = await ocr.recognize(samples.encode(image), languages=["eng"], include_layout=True)
    assert (result.document_type, result.page_count, result.engine, result.model) == ("png", 1, "tesseract", "tesseract")
    [page] = result.pages
    assert samples.cer(joined(samples.ENGLISH), page.text) <= MAX_CER
    assert (page.page, page.source, page.language, page.script) == (1, "ocr", "eng", "Latin")
    assert (page.width, page.height) == image.size
    assert [line.text for line in page.lines] == samples.ENGLISH
    assert all(word.confidence > 50 and word.box.width > 0 for line in page.lines for word in line.words)
    assert page.confidence > 80
    assert page.elapsed_ms > 0


@pytest.mark.parametrize(("fmt", "kind"), [("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")])
async def test_every_image_format(ocr: Ocr, fmt: str, kind: str) -> None:
    image = samples.text_image(samples.ENGLISH[:1], face="serif", size=26, width=900).convert("RGB")
    result = await ocr.recognize(samples.encode(image, fmt), languages=["eng"])
    assert result.document_type == kind
    assert samples.cer(samples.ENGLISH[0], result.text) <= MAX_CER


async def test_pdf_text_layer_pages_are_read_and_scans_recognised(ocr: Ocr) -> None:
    pdf = samples.mixed_pdf(
        [samples.ENGLISH, samples.GERMAN], [samples.text_image(samples.FRENCH), samples.text_image(samples.RUSSIAN)]
    )
    result = await ocr.recognize(pdf)
    assert (result.document_type, result.page_count) == ("pdf", 4)
    pages = result.pages
    assert [p.source for p in pages] == ["text_layer", "text_layer", "ocr", "ocr"]
    assert [p.language for p in pages] == ["eng", "deu", "fra", "rus"]
    assert [p.script for p in pages] == ["Latin", "Latin", "Latin", "Cyrillic"]
    assert pages[0].text == joined(samples.ENGLISH)
    assert pages[1].text == joined(samples.GERMAN)
    assert (pages[0].confidence, pages[0].width) == (100, 0)
    assert samples.cer(joined(samples.FRENCH), pages[2].text) <= MAX_CER
    assert samples.cer(joined(samples.RUSSIAN), pages[3].text) <= MAX_CER
    assert result.text == "\f".join(p.text for p in pages)


async def test_page_range(ocr: Ocr) -> None:
    pdf = samples.text_pdf([[f"This is page number {n} of the report."] for n in range(1, 7)])
    result = await ocr.recognize(pdf, first_page=3, last_page=4)
    assert [p.page for p in result.pages] == [3, 4]
    assert result.pages[0].text == "This is page number 3 of the report."
    assert result.page_count == 6


async def test_stream_sends_pages_in_order_and_the_loop_stays_free(ocr: Ocr) -> None:
    scans = [samples.text_image([f"Page {n}: {line}"]) for n, line in enumerate(samples.ENGLISH + samples.ENGLISH[:1], 1)]
    request = ocr_pb2.StreamRecognizeRequest(job=common_pb2.OcrJob(document=samples.scanned_pdf(scans), languages=["eng"]))
    pages: list[common_pb2.OcrPage] = []
    async for message in ocr.stub.StreamRecognize(request, timeout=TIMEOUT):
        if not pages:
            status = (await ocr.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=1)).status
            assert status.in_flight == 1
        assert (message.page_count, message.document_type, message.engine) == (4, "pdf", "tesseract")
        pages.append(message.page)
    assert [p.page for p in pages] == [1, 2, 3, 4]
    assert samples.cer(f"Page 2: {samples.ENGLISH[1]}", pages[1].text) <= MAX_CER
    assert (await ocr.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=1)).status.in_flight == 0


async def test_a_cancelled_stream_frees_its_slot_and_workers(ocr: Ocr) -> None:
    scans = [samples.text_image(samples.ENGLISH) for _ in range(8)]
    request = ocr_pb2.StreamRecognizeRequest(job=common_pb2.OcrJob(document=samples.scanned_pdf(scans), languages=["eng"]))
    call = ocr.stub.StreamRecognize(request, timeout=TIMEOUT)
    first = await call.read()
    assert isinstance(first, ocr_pb2.StreamRecognizeResponse)
    assert first.page.page == 1
    call.cancel()
    deadline = asyncio.get_running_loop().time() + 10
    while ocr.service.backend.in_flight or ocr.service.backend.pool.busy:
        assert asyncio.get_running_loop().time() < deadline, "the cancelled document kept running"
        await asyncio.sleep(0.05)
    result = await ocr.recognize(samples.encode(samples.text_image(samples.ENGLISH[:1])), languages=["eng"])
    assert samples.cer(samples.ENGLISH[0], result.text) <= MAX_CER


async def test_multi_frame_tiff(ocr: Ocr) -> None:
    frames = [samples.text_image([line], width=1000) for line in samples.ENGLISH]
    result = await ocr.recognize(samples.tiff_pages(frames), languages=["eng"])
    assert (result.document_type, result.page_count) == ("tiff", 3)
    for page, line in zip(result.pages, samples.ENGLISH, strict=True):
        assert samples.cer(line, page.text) <= MAX_CER


async def test_rotated_scan_and_greek_are_detected(ocr: Ocr) -> None:
    scan = samples.text_image(samples.GREEK).rotate(270, expand=True)
    [page] = (await ocr.recognize(samples.encode(scan))).pages
    assert (page.language, page.script) == ("ell", "Greek")
    assert page.width > page.height
    assert samples.cer(joined(samples.GREEK), page.text) <= MAX_CER


async def test_resolution_mode_sets_the_rendering_scale(ocr: Ocr) -> None:
    pdf = samples.scanned_pdf([samples.text_image(samples.ENGLISH[:1])])
    tiny = (await ocr.recognize(pdf, resolution=common_pb2.RESOLUTION_TINY, languages=["eng"])).pages[0]
    large = (await ocr.recognize(pdf, resolution=common_pb2.RESOLUTION_LARGE, languages=["eng"])).pages[0]
    default = (await ocr.recognize(pdf, languages=["eng"])).pages[0]
    assert large.width == pytest.approx(3 * tiny.width, abs=2)
    assert default.width == pytest.approx(2 * tiny.width, abs=2)
    assert samples.cer(samples.ENGLISH[0], large.text) <= MAX_CER


async def test_documents_of_different_requests_share_the_workers(ocr: Ocr) -> None:
    pdf = samples.scanned_pdf([samples.text_image([line]) for line in samples.ENGLISH[:2]])
    results = await asyncio.gather(*(ocr.recognize(pdf, languages=["eng"]) for _ in range(2)))
    assert all(len(r.pages) == 2 for r in results)
    assert ocr.service.backend.pool.peak == 2


async def test_unknown_language_lists_the_installed_ones(ocr: Ocr) -> None:
    error = await ocr.refused(samples.encode(samples.text_image(samples.ENGLISH)), languages=["eng", "klingon"])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "language klingon is not installed; installed: deu, ell, eng, fra, rus"


BAD_INPUTS: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "the document is empty"),
    ("exe named scan.png", lambda: b"MZ\x90\x00" + bytes(500), "unsupported document type: the bytes are a Windows executable"),
    ("html named scan.jpg", lambda: b"<!doctype html><html><body>hi</body></html>", "the bytes are an HTML page"),
    ("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><text>Hi</text></svg>', "the bytes are an SVG image"),
    ("truncated png", lambda: samples.encode(samples.text_image(samples.ENGLISH))[:3000], "PNG image is truncated or corrupt"),
    ("corrupt pdf", lambda: b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"%%EOF", "the PDF is corrupt"),
    ("truncated pdf", lambda: samples.text_pdf([samples.ENGLISH] * 3)[:1500], "the PDF is truncated"),
    ("encrypted pdf", lambda: samples.encrypted_pdf(samples.ENGLISH), "the PDF is encrypted"),
    ("absurd page count", lambda: samples.blank_pdf(501), "the PDF has 501 pages; this backend accepts at most 500"),
    ("oversize", lambda: b"\x89PNG\r\n\x1a\n" + bytes(10 * 2**20), "this backend accepts at most 10,485,760"),
]


@pytest.mark.parametrize(("make", "problem"), [(m, p) for _, m, p in BAD_INPUTS], ids=[n for n, _, _ in BAD_INPUTS])
async def test_bad_input_is_refused_with_its_reason(ocr: Ocr, make: Callable[[], bytes], problem: str) -> None:
    error = await ocr.refused(make())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (error.details() or "")
    assert (await ocr.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)).status.in_flight == 0


async def test_decompression_bomb_names_the_field(ocr: Ocr) -> None:
    error = await ocr.refused(samples.png_bomb(15_000, 15_000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "decompression bomb" in (error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "job.document"


async def test_bad_page_range(ocr: Ocr) -> None:
    error = await ocr.refused(samples.text_pdf([samples.ENGLISH]), first_page=2)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "first_page 2 is past the document's last page (1)"


async def test_load_unload_status_and_health(ocr: Ocr) -> None:
    status = (await ocr.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)).status
    assert (status.backend, status.engine, status.state) == ("tesseract-0", "tesseract", common_pb2.BACKEND_STATE_READY)
    assert (list(status.loaded_models), status.in_flight, status.capacity) == (["tesseract"], 0, 2)
    assert await ocr.serving() == "SERVING"

    unloaded = await ocr.lifecycle.UnloadModel(backend_pb2.UnloadModelRequest(), timeout=5)
    assert (unloaded.outcome, unloaded.status.state) == ("unloaded tesseract", common_pb2.BACKEND_STATE_IDLE)
    assert await ocr.serving() == "NOT_SERVING"
    error = await ocr.refused(samples.encode(samples.text_image(samples.ENGLISH)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ocr.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="deepseek-ocr"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    loaded = await ocr.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="tesseract"), timeout=30)
    assert loaded.status.state == common_pb2.BACKEND_STATE_READY
    assert "ready with deu, ell, eng, fra, rus" in loaded.outcome
    assert await ocr.serving() == "SERVING"


async def test_deepseek_backend_starts_and_stops_its_server(tmp_path: Path) -> None:
    raw = {
        "mesh_tls": {"mode": "plaintext"},
        "models": {"deepseek-ocr": {"kind": "ocr", "default_resolution": "gundam", "path": "deepseek-ai/DeepSeek-OCR"}},
        "backends": [
            {
                "name": "gpu-ocr-0",
                "kind": "ocr",
                "engine": "deepseek-ocr",
                "command": [sys.executable, str(FAKE_VLLM)],
                "port": free_port(),
                "models": ["deepseek-ocr"],
                "startup_timeout_seconds": 30,
            }
        ],
    }
    async for ocr in running(raw, tmp_path):
        assert await ocr.serving() == "SERVING"
        pdf = samples.scanned_pdf([samples.text_image(samples.ENGLISH)])
        markdown = await ocr.recognize(
            pdf, resolution=common_pb2.RESOLUTION_TINY, output_format=common_pb2.OCR_OUTPUT_FORMAT_MARKDOWN
        )
        assert markdown.engine == "deepseek-ocr"
        # The stand-in echoes the prompt; the service strips grounding tags from model output, so <|grounding|> goes too.
        # vLLM's DeepSeek-OCR processor tiles at 640 px whatever the request asks, so "tiny" sends a page within 640.
        assert markdown.pages[0].text.startswith("prompt '<image>\\nConvert the document to markdown.' image 640x")
        gundam = await ocr.recognize(pdf)
        assert gundam.pages[0].text.startswith("prompt '<image>\\nFree OCR.' image 1190x")
        engine = ocr.service.backend.engine
        assert isinstance(engine, DeepSeekOcrEngine)
        assert engine.server is not None
        os.kill(engine.server.pid, signal.SIGKILL)
        await until(ocr, "NOT_SERVING")
        await until(ocr, "SERVING")
        status = (await ocr.lifecycle.GetStatus(backend_pb2.GetStatusRequest(), timeout=5)).status
        assert (status.state, status.restarts) == (common_pb2.BACKEND_STATE_READY, 1)
        unloaded = await ocr.lifecycle.UnloadModel(backend_pb2.UnloadModelRequest(model="deepseek-ocr"), timeout=30)
        assert unloaded.status.state == common_pb2.BACKEND_STATE_IDLE
        assert await ocr.serving() == "NOT_SERVING"
        loaded = await ocr.lifecycle.LoadModel(backend_pb2.LoadModelRequest(model="deepseek-ocr"), timeout=60)
        assert loaded.outcome == "DeepSeek-OCR deepseek-ocr started"
        assert await ocr.serving() == "SERVING"


async def test_the_lifecycle_contract_is_served_with_health_and_refusals(ocr: Ocr) -> None:
    for service in ("", "aigw.ocr.v1.OcrService", "aigw.backend.v1.BackendService"):
        reply = await ocr.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    assert "aigw.backend.v1.BackendService" in ocr.service.service_names

    for call in (
        ocr.lifecycle.SleepModel(backend_pb2.SleepModelRequest(level=1), timeout=5),
        ocr.lifecycle.WakeModel(backend_pb2.WakeModelRequest(), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert str(refused.value.details()).startswith("backend tesseract-0 has no sleep mode (OCR engine tesseract")
    switched = await ocr.lifecycle.SwitchModel(backend_pb2.SwitchModelRequest(model="tesseract"), timeout=30)
    assert (switched.outcome, list(switched.status.loaded_models)) == ("switched: tesseract is already loaded", ["tesseract"])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await ocr.lifecycle.SwitchModel(backend_pb2.SwitchModelRequest(model="nope"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
