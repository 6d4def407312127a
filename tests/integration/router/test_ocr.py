"""Through real servers: OCR requests go through the queue to a Tesseract backend (raw, JSON and streamed)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
import pytest_asyncio
from google.api import httpbody_pb2

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from bench.documents import page_png
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import OCR_MODEL, Mesh, bearer, mesh_on, ocr_backend
from tests.unit.ocr.samples import text_pdf

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(ferretdb: FerretDBProcess, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with mesh_on(ferretdb, tmp_path_factory.mktemp("router-ocr"), [ocr_backend()]) as running:
        yield running


def two_page_pdf() -> bytes:
    return text_pdf([["The first page speaks of apples."], ["The second page speaks of pears."]])


async def test_raw_image_upload_is_recognised(mesh: Mesh) -> None:
    upload = httpbody_pb2.HttpBody(content_type="image/png", data=page_png(7))
    call = mesh.router.Ocr(
        router_pb2.OcrRequest(upload=upload, languages=["eng"]), metadata=bearer(mesh.token(), x_resolution="small")
    )
    reply = await call
    assert dict(await call.trailing_metadata())["x-request-id"] == reply.request_id
    assert "x-request-id" not in dict(await call.initial_metadata())
    assert reply.status == common_pb2.SUCCEEDED
    assert "quick brown fox" in reply.text
    assert reply.result.document_type == "png"
    assert reply.result.page_count == 1


async def test_json_upload_with_base64_document(mesh: Mesh) -> None:
    body: dict[str, Any] = {
        "document": base64.b64encode(page_png(3)).decode(),
        "languages": ["eng"],
        "resolution": "base",
        "model": OCR_MODEL,
    }
    upload = httpbody_pb2.HttpBody(content_type="application/json; charset=utf-8", data=orjson.dumps(body))
    reply = await mesh.router.Ocr(router_pb2.OcrRequest(upload=upload), metadata=bearer(mesh.token()))
    assert "Total amount due" in reply.text


async def test_stream_ocr_sends_each_page(mesh: Mesh) -> None:
    request = router_pb2.StreamOcrRequest(document=two_page_pdf())
    events = [e async for e in mesh.router.StreamOcr(request, metadata=bearer(mesh.token()))]
    pages = [e.page for e in events if e.HasField("page")]
    assert [p.page for p in pages] == [1, 2]
    assert "apples" in pages[0].text
    assert "pears" in pages[1].text
    assert {e.page_count for e in events if e.HasField("page")} == {2}
    assert events[-1].status == common_pb2.SUCCEEDED


async def test_async_ocr_is_answered_with_its_id(mesh: Mesh) -> None:
    reply = await mesh.router.Ocr(router_pb2.OcrRequest(document=two_page_pdf(), async_mode=True), metadata=bearer(mesh.token()))
    assert reply.status == common_pb2.QUEUED
    events = [
        e
        async for e in mesh.router.WatchRequest(
            router_pb2.WatchRequestRequest(request_id=reply.request_id), metadata=bearer(mesh.token())
        )
    ]
    assert events[-1].request.state == common_pb2.SUCCEEDED
    assert events[-1].request.ocr_result.page_count == 2


@pytest.mark.parametrize(
    ("request_", "headers", "field"),
    [
        (router_pb2.OcrRequest(), {}, "document"),
        (router_pb2.OcrRequest(document=b"%PDF-1.7", resolution="huge"), {}, "resolution"),
        (router_pb2.OcrRequest(document=b"%PDF-1.7"), {"x_resolution": "4k"}, "resolution"),
        (router_pb2.OcrRequest(document=b"<html><body>not an image</body></html>"), {}, "document"),
        (
            router_pb2.OcrRequest(upload=httpbody_pb2.HttpBody(content_type="application/json", data=b'{"document": "***"}')),
            {},
            "document",
        ),
    ],
)
async def test_bad_ocr_requests_are_invalid_argument(
    mesh: Mesh, request_: router_pb2.OcrRequest, headers: dict[str, str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.router.Ocr(request_, metadata=bearer(mesh.token(), **headers))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "").split(":")[0]
