"""The client against the real router, queue, textgen (over a fast upstream) and OCR (Tesseract): chat, streams, async, errors."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from PIL import Image, ImageDraw, ImageFont

from aigw_client.client import AsyncAigwClient, AuthError, InvalidRequest, NotFound
from aigw_server.ocr.service import build as build_ocr
from aigw_server.queue.service import build as build_queue
from aigw_server.router.service import RouterService
from aigw_server.runtime.auth import TokenSigner
from aigw_server.textgen.service import build as build_textgen
from harness.ferretdb import FerretDBProcess
from tests.helpers import free_port
from tests.integration.router.harness import (
    MODEL,
    OCR_MODEL,
    SECRET,
    Upstream,
    create_users,
    mesh_config,
    ocr_backend,
    serving,
    textgen_backend,
    upstreams,
    wait_until,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]
ANSWER = "one two three four five"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with upstreams(("--answer", ANSWER, "--tokens", "5")) as started:
        yield started[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(
    ferretdb: FerretDBProcess, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncAigwClient]:
    cfg = mesh_config(
        ferretdb.uri,
        f"t_{uuid.uuid4().hex[:12]}",
        tmp_path_factory.mktemp("client-router"),
        [textgen_backend("tg-0", upstream), ocr_backend()],
    )
    token, _ = TokenSigner(cfg.auth, SECRET).issue_access("alice", "user")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(serving(build_queue(cfg), cfg.services.queue.address))
        await create_users(cfg.services.queue.address, ("alice",))
        await stack.enter_async_context(serving(build_textgen(cfg, {"AIGW_BACKEND": "tg-0"}), cfg.backend("tg-0").address))
        await stack.enter_async_context(serving(build_ocr(cfg, "tess-0"), cfg.backend("tess-0").address))
        router = RouterService(cfg)
        address = f"127.0.0.1:{free_port()}"
        await stack.enter_async_context(serving(router, address, until_serving=False))
        await wait_until(lambda: router.pool.servable_models() >= {MODEL, OCR_MODEL}, what="backends ready")
        client = await stack.enter_async_context(AsyncAigwClient(address, token=token, env={}))
        yield client


def page_png(text: str) -> bytes:
    image = Image.new("RGB", (900, 200), "white")
    font = ImageFont.truetype("DejaVuSans.ttf", 48)
    ImageDraw.Draw(image).text((30, 60), text, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def test_chat_stream_and_openai_shape(gateway: AsyncAigwClient) -> None:
    answer = await gateway.chat("Count to five", model=MODEL, max_tokens=16, priority="high")
    assert (answer.text, answer.status, answer.model, answer.finish_reason) == (ANSWER, "SUCCEEDED", MODEL, "stop")
    assert answer.usage.completion_tokens == 5
    assert answer.request_id
    deltas = [d async for d in gateway.stream_chat("Count to five", model=MODEL)]
    assert "".join(d.delta for d in deltas) == ANSWER
    assert deltas[-1].status == "SUCCEEDED"
    assert deltas[-1].usage is not None
    completion = await gateway.chat_completion([{"role": "user", "content": "hi"}], model=MODEL)
    assert completion["choices"][0]["message"]["content"] == ANSWER


async def test_async_submit_then_wait_get_and_watch(gateway: AsyncAigwClient) -> None:
    queued = await gateway.chat("later", model=MODEL, async_mode=True)
    assert queued.status in ("QUEUED", "RUNNING")
    assert queued.text == ""
    done = await gateway.wait_request(queued.request_id, timeout=30)
    assert done.state == "SUCCEEDED"
    assert done.client_id == "alice"
    assert done.result is not None
    assert done.result.text == ANSWER
    assert (await gateway.get_request(queued.request_id)).done
    assert [e.event async for e in gateway.watch_request(queued.request_id)][-1] == "finished"


async def test_ocr_whole_and_page_by_page(gateway: AsyncAigwClient) -> None:
    document = await gateway.ocr(page_png("Hello gateway"), model=OCR_MODEL, languages="eng")
    assert document.text.strip() == "Hello gateway"
    assert (document.document_type, document.pages[0].language) == ("png", "eng")
    events = [e async for e in gateway.stream_ocr(page_png("Second test"), model=OCR_MODEL)]
    pages = [e.page for e in events if e.page is not None]
    assert [p.text.strip() for p in pages] == ["Second test"]
    assert events[-1].status == "SUCCEEDED"


async def test_the_gateway_errors_arrive_as_the_client_hierarchy(gateway: AsyncAigwClient) -> None:
    with pytest.raises(NotFound):
        await gateway.get_request("nope")
    with pytest.raises(NotFound, match="no-such-model"):
        await gateway.chat("x", model="no-such-model")
    with pytest.raises(InvalidRequest) as bad:
        await gateway.chat("x", model=MODEL, temperature=5)
    assert bad.value.field_violations[0][0] == "temperature"
    async with AsyncAigwClient(gateway.router_address, token="garbage", env={}) as stranger:
        with pytest.raises(AuthError):
            await stranger.chat("x", model=MODEL)
