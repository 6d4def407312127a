"""The router's REST surface through the embedded edge: uploads in every encoding, one size rule, refusals in API terms."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import httpx
import openai
import orjson
import pytest
import pytest_asyncio

from aigw.backend.v1 import backend_pb2, backend_pb2_grpc
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.runtime.config import json_upload_bytes
from bench.documents import page_png
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import (
    MODEL,
    OCR_MODEL,
    Mesh,
    edge_before,
    mesh_on,
    ocr_backend,
    textgen_backend,
    upstreams,
    wait_until,
)
from tests.unit.ocr.samples import encrypted_pdf, text_pdf

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
DOCUMENT_LIMIT = 300_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(ferretdb: FerretDBProcess, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    with upstreams(("--answer", "hello there")) as (upstream,):
        backends = [textgen_backend("tg-0", upstream), {**ocr_backend(), "max_document_bytes": DOCUMENT_LIMIT}]
        server = {"max_body_bytes": json_upload_bytes(DOCUMENT_LIMIT)}
        async with mesh_on(ferretdb, tmp_path_factory.mktemp("router-rest"), backends, server=server) as running:
            yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rest(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {mesh.token()}"}
    async with (
        edge_before(mesh) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers) as client,
    ):
        yield client


def violation(reply: httpx.Response) -> str:
    """The field of the BadRequest detail of an error answer."""
    for detail in reply.json()["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            field: str = detail["field_violations"][0]["field"]
            return field
    raise AssertionError(f"no BadRequest detail in {reply.text}")


async def stored_ocr_jobs(mesh: Mesh, client_id: str) -> int:
    reply = await mesh.jobs.ListJobs(queue_pb2.ListJobsRequest(model=OCR_MODEL, client_id=client_id))
    return len(reply.jobs)


def padded_png(size: int) -> bytes:
    """A real PNG page followed by filler up to `size` bytes (decoders stop at the image's end)."""
    png = page_png(7)
    return png + b"\0" * (size - len(png))


# multipart/form-data


async def test_a_multipart_upload_is_read(rest: httpx.AsyncClient) -> None:
    form = {"resolution": "small", "languages": "eng", "model": OCR_MODEL}
    reply = await rest.post("/api/ocr", files={"file": ("page.png", page_png(7), "image/png")}, data=form)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "SUCCEEDED"
    assert "quick brown fox" in body["text"].lower()
    assert body["result"]["document_type"] == "png"


async def test_a_multipart_upload_streams_page_by_page(rest: httpx.AsyncClient) -> None:
    pdf = text_pdf([["The first page speaks of apples."], ["The second page speaks of pears."]])
    files = {"file": ("two.pdf", pdf, "application/pdf")}
    async with rest.stream("POST", "/api/ocr/stream", files=files, data={"first_page": "2"}) as reply:
        assert reply.status_code == 200
        text = (await reply.aread()).decode()
    assert "pears" in text
    assert "apples" not in text


@pytest.mark.parametrize(
    ("files", "data", "field", "words"),
    [
        ({}, {"model": OCR_MODEL}, "file", "file: required"),
        ({"file": ("a.png", b"x", "image/png")}, {"first_page": "two"}, "first_page", "first_page must be an integer"),
        ({"file": ("a.png", b"x", "image/png")}, {"colour": "red"}, "colour", 'unknown form field "colour"'),
    ],
)
async def test_bad_forms_name_the_field(
    rest: httpx.AsyncClient, files: dict[str, Any], data: dict[str, str], field: str, words: str
) -> None:
    if not files:  # httpx sends a form without files as urlencoded; force multipart with an empty text part
        files = {"model": (None, OCR_MODEL)}
    reply = await rest.post("/api/ocr", files=files, data=data)
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["message"]
    assert violation(reply) == field


async def test_a_form_with_a_bad_boundary_is_400(rest: httpx.AsyncClient) -> None:
    reply = await rest.post("/api/ocr", content=b"--other\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("body: malformed multipart/form-data")


# one size rule


def _send(rest: httpx.AsyncClient, encoding: str, document: bytes) -> Awaitable[httpx.Response]:
    async_headers = {"prefer": "respond-async"}
    if encoding == "raw":
        return rest.post("/api/ocr", content=document, headers={**async_headers, "content-type": "image/png"})
    if encoding == "json":
        return rest.post("/api/ocr", json={"document": base64.b64encode(document).decode(), "async": True})
    return rest.post("/api/ocr", files={"file": ("doc.png", document, "image/png")}, headers=async_headers)


@pytest.mark.parametrize("encoding", ["raw", "json", "multipart"])
async def test_one_size_rule_whatever_the_encoding(rest: httpx.AsyncClient, encoding: str) -> None:
    under = await _send(rest, encoding, padded_png(DOCUMENT_LIMIT))
    assert under.status_code == 200, under.text
    assert under.json()["status"] in ("QUEUED", "RUNNING")

    over = await _send(rest, encoding, padded_png(DOCUMENT_LIMIT + 1))
    assert over.status_code == 413, over.text
    assert f"{DOCUMENT_LIMIT:,} bytes" in over.json()["message"]
    assert violation(over) == "document"


async def test_a_body_far_over_the_limit_is_413_naming_the_document_limit(rest: httpx.AsyncClient) -> None:
    reply = await rest.post("/api/ocr", content=padded_png(2 * DOCUMENT_LIMIT), headers={"content-type": "image/png"})
    assert reply.status_code == 413
    assert f"a document may be at most {DOCUMENT_LIMIT:,} bytes" in reply.json()["message"]


# languages in the query string


@pytest.mark.parametrize("languages", ["eng,deu", "eng+fra", "eng deu"])
async def test_languages_in_the_query_string_take_several_codes(rest: httpx.AsyncClient, languages: str) -> None:
    reply = await rest.post(
        f"/api/ocr?languages={languages.replace(' ', '%20')}", content=page_png(3), headers={"content-type": "image/png"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "SUCCEEDED"


# refused before admission


@pytest.mark.parametrize(
    ("document", "params", "field", "words"),
    [
        (encrypted_pdf(["A secret page."]), {}, "document", "encrypted"),
        (text_pdf([["A page."]])[:-600], {}, "document", "truncated"),
        (page_png(1), {"languages": "spa"}, "languages", "spa is not installed"),
        (page_png(1), {"first_page": "3"}, "first_page", "past the document's last page (1)"),
    ],
)
async def test_unrecognisable_requests_are_refused_before_admission(
    mesh: Mesh, rest: httpx.AsyncClient, document: bytes, params: dict[str, str], field: str, words: str
) -> None:
    client_id = f"pre-{uuid.uuid4().hex[:8]}"
    before = await mesh.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=OCR_MODEL))
    token = mesh.token("alice", client_ids=(client_id,))
    headers = {"content-type": "application/octet-stream", "authorization": f"Bearer {token}", "x-client-id": client_id}
    reply = await rest.post("/api/ocr", params=params, content=document, headers=headers)
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["message"]
    assert violation(reply) == field
    assert await stored_ocr_jobs(mesh, client_id) == 0
    after = await mesh.jobs.GetQueueStats(queue_pb2.GetQueueStatsRequest(model=OCR_MODEL))
    assert after.total_failed == before.total_failed


# the x-request-id header: the id the request is stored under, one header, whichever metadata carried it


async def test_a_rest_chat_answers_the_stored_request_id_in_its_header(mesh: Mesh, rest: httpx.AsyncClient) -> None:
    reply = await rest.post("/api/chat", json={"model": MODEL, "prompt": "hi"}, headers={"x-request-id": "rest-client-1"})
    assert reply.status_code == 200, reply.text
    assert reply.headers.get_list("x-request-id") == [reply.json()["request_id"]]
    job = await mesh.jobs.GetJob(queue_pb2.GetJobRequest(request_id=reply.headers["x-request-id"]))
    assert job.job.state == common_pb2.SUCCEEDED


async def test_an_async_rest_chat_and_ocr_answer_the_stored_request_id_in_their_header(rest: httpx.AsyncClient) -> None:
    prefer = {"prefer": "respond-async"}
    chat = await rest.post("/api/chat", json={"model": MODEL, "prompt": "hi"}, headers=prefer)
    ocr = await rest.post("/api/ocr", content=page_png(7), headers={**prefer, "content-type": "image/png"})
    for reply in (chat, ocr):
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] in ("QUEUED", "RUNNING", "SUCCEEDED")
        assert reply.headers.get_list("x-request-id") == [reply.json()["request_id"]]


async def test_a_rest_ocr_answers_the_stored_request_id_in_its_header(rest: httpx.AsyncClient) -> None:
    reply = await rest.post("/api/ocr", content=page_png(7), headers={"content-type": "image/png", "x-resolution": "small"})
    assert reply.status_code == 200, reply.text
    assert reply.headers.get_list("x-request-id") == [reply.json()["request_id"]]


async def test_a_refused_rest_chat_answers_the_clients_request_id(rest: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "hi", "priority": "urgent"}
    reply = await rest.post("/api/chat", json=body, headers={"x-request-id": "rest-client-2"})
    assert reply.status_code == 400
    assert reply.headers.get_list("x-request-id") == ["rest-client-2"]


async def test_a_rest_stream_answers_the_stored_request_id_in_its_header(rest: httpx.AsyncClient) -> None:
    async with rest.stream("POST", "/api/chat/stream", json={"model": MODEL, "prompt": "hi"}) as reply:
        assert reply.status_code == 200
        first = (await reply.aread()).decode().split("\n\n")[0]
    assert reply.headers.get_list("x-request-id") == [orjson.loads(first.removeprefix("data: "))["request_id"]]


# chat refusals in the API's terms


async def test_stream_true_on_chat_points_to_the_stream_endpoint(rest: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": True}
    reply = await rest.post("/api/chat", json=body)
    assert reply.status_code == 400
    assert "/api/chat/stream" in reply.json()["message"]
    assert violation(reply) == "stream"
    assert (await rest.post("/api/chat", json={**body, "stream": False})).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": "ten"}, 'max_tokens must be an integer; got "ten"'),
        ({"bogus": 1}, 'unknown field "bogus": this request has no such field'),
        ({"messages": [{"role": "user", "text": "hi"}]}, 'unknown field "messages[0].text": this request has no such field'),
        ({"temperature": "warm"}, 'temperature must be a number; got "warm"'),
    ],
)
async def test_chat_body_refusals_name_the_field(rest: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    reply = await rest.post("/api/chat", json={"model": MODEL, "prompt": "hi", **body})
    assert reply.status_code == 400
    assert reply.json()["message"] == message


# the OpenAI-compatible surface answers errors in OpenAI's shape


@pytest.fixture
async def openai_client(rest: httpx.AsyncClient, mesh: Mesh) -> AsyncIterator[openai.AsyncOpenAI]:
    base_url = f"{str(rest.base_url).rstrip('/')}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key=mesh.token(), max_retries=0) as client:
        yield client


async def test_openai_sdk_raises_the_matching_exception_with_the_message(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await openai_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body == {
        "message": "model 'nope' does not exist",
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }

    with pytest.raises(openai.BadRequestError) as bad:
        await openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert bad.value.type == "invalid_request_error"
    assert bad.value.param == "temperature"
    assert "temperature" in bad.value.body["message"]  # type: ignore[index]  # openai types an error body as object

    with pytest.raises(openai.AuthenticationError) as unknown:
        await openai_client.with_options(api_key="not-a-credential").models.list()
    assert unknown.value.type == "authentication_error"


async def test_v1_errors_keep_their_status_and_take_openai_shape(rest: httpx.AsyncClient) -> None:
    missing = await rest.get("/v1/requests/does-not-exist")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error"}
    assert missing.json()["error"]["type"] == "not_found_error"
    no_route = await rest.get("/v1/nothing-here")
    assert no_route.status_code == 404
    assert no_route.json()["error"]["message"] == "no route for GET /v1/nothing-here"
    assert (
        "error" not in (await rest.post("/api/chat", json={"bogus": 1})).json()
    )  # the gateway's own API keeps google.rpc.Status


# a stopped model


async def test_a_stopped_model_is_503_at_once_with_retry_after_and_how_to_start_it(mesh: Mesh, rest: httpx.AsyncClient) -> None:
    backend = next(b for b in mesh.cfg.backends if b.kind == "ocr")
    document, png_type = page_png(2), {"content-type": "image/png"}
    async with grpc.aio.insecure_channel(backend.address) as channel:
        ocr = backend_pb2_grpc.BackendServiceStub(channel)
        await ocr.UnloadModel(backend_pb2.UnloadModelRequest(model=OCR_MODEL))
        try:
            await wait_until(lambda: mesh.router_service.pool.stopped(OCR_MODEL), what="the router to see the model stopped")
            started = time.monotonic()
            as_user = await rest.post("/api/ocr", content=document, headers=png_type)
            assert time.monotonic() - started < 2.0
            assert as_user.status_code == 503
            assert as_user.headers["retry-after"] == "60"
            stopped = f"model {OCR_MODEL!r} is stopped: no backend has it loaded"
            assert as_user.json()["message"] == f"{stopped}; an operator has to start it"

            admin = {**png_type, "authorization": f"Bearer {mesh.token('root', role='admin')}"}
            as_admin = await rest.post("/api/ocr/stream", content=document, headers=admin)
            assert as_admin.status_code == 503
            how = f"start it with POST /admin/models/{OCR_MODEL}/start (AdminService.StartModel)"
            assert as_admin.json()["message"] == f"{stopped}; {how}"

            queued = await rest.post("/api/ocr", params={"async": "true"}, content=document, headers=png_type)
            assert queued.status_code == 200, "an async request may wait in the queue for the model"
        finally:
            await ocr.LoadModel(backend_pb2.LoadModelRequest(model=OCR_MODEL))
            await wait_until(lambda: OCR_MODEL in mesh.router_service.pool.servable_models(), what="the model back")
