"""The asyncio client against the stand-in gateway: same requests, results and errors as the blocking one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aigw_client.client import (
    AsyncAigwClient,
    AuthError,
    InvalidRequest,
    OcrResult,
    RateLimited,
    RetryPolicy,
    TokenInfo,
    Unavailable,
)
from tests.helpers import free_port
from tests.unit.client.gateway import PASSWORD, GatewayState


def client(address: str, **kwargs: object) -> AsyncAigwClient:
    # Each test passes the few keyword options it needs, of their own types; the constructor checks them.
    return AsyncAigwClient(address, env={}, **kwargs)  # type: ignore[arg-type]


async def test_chat_and_async_submit(address: str, gateway: GatewayState) -> None:
    async with client(address, api_key="key-user", client_id="team-a") as gw:
        answer = await gw.chat("Hello", model="tiny-chat", max_tokens=8, priority="high")
        queued = await gw.chat("later", async_mode=True)
    assert (answer.text, answer.request_id, answer.usage.total_tokens) == ("echo: Hello", "req-1", 8)
    assert (queued.request_id, queued.status, queued.position) == ("req-async", "QUEUED", 2)
    first = gateway.calls[0]
    assert first.metadata["x-client-id"] == "team-a"
    assert first.metadata["x-priority"] == "high"
    assert first.request.max_tokens == 8


async def test_streams_of_chat_completion_chunks_and_ocr_pages(address: str, gateway: GatewayState, tmp_path: Path) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG fake")
    async with client(address, api_key="key-user") as gw:
        deltas = [d async for d in gw.stream_chat("Hi")]
        chunks = [c async for c in gw.stream_chat_completion([{"role": "user", "content": "Hi"}])]
        pages = [e.page.page async for e in gw.stream_ocr(image, pages="2-3", languages=["deu"]) if e.page is not None]
        whole = await gw.ocr(image, pages=1)
    assert "".join(d.delta for d in deltas) == "Hello"
    assert deltas[-1].finish_reason == "length"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["total_tokens"] == 8
    assert pages == [2, 3]
    assert isinstance(whole, OcrResult)
    assert [p.page for p in whole.pages] == [1]
    assert gateway.last("StreamOcr").request.document == b"\x89PNG fake"


async def test_request_watch_and_wait(address: str, gateway: GatewayState) -> None:
    async with client(address, api_key="key-user") as gw:
        events = [e.event async for e in gw.watch_request("r1")]
        waited = await gw.wait_request("doomed")
        cancelled = await gw.cancel_request("r1")
    assert events == ["position", "granted", "finished"]
    assert waited.state == "FAILED"
    assert waited.done
    assert cancelled.state == "CANCELLED"


async def test_errors_map_like_the_blocking_client(address: str, gateway: GatewayState) -> None:
    gateway.full_times, gateway.retry_after = 1, 1.5
    async with client(address, api_key="key-user") as gw:
        with pytest.raises(RateLimited) as limited:
            await gw.chat("full")
        with pytest.raises(InvalidRequest) as bad:
            await gw.chat("bad")
        with pytest.raises(Unavailable, match="went away"):
            async for _ in gw.stream_chat("break"):
                pass
    assert limited.value.retry_after == pytest.approx(1.5)
    assert bad.value.field_violations[0][0] == "temperature"


async def test_unreachable_gateway() -> None:
    address = f"127.0.0.1:{free_port()}"
    async with client(address, api_key="k", timeout=5) as gw:
        with pytest.raises(Unavailable, match=address):
            await gw.models()


async def test_retry_waits_the_retry_after(address: str, gateway: GatewayState) -> None:
    gateway.full_times, gateway.retry_after = 1, 0.1
    start = time.monotonic()
    async with client(address, api_key="key-user", retry=RetryPolicy(max_attempts=2)) as gw:
        answer = await gw.chat("full")
    assert answer.text == "echo: full"
    assert time.monotonic() - start >= 0.1
    assert len(gateway.calls) == 2


async def test_login_refresh_and_on_token(address: str, gateway: GatewayState) -> None:
    tokens: list[TokenInfo] = []
    async with client(address, on_token=tokens.append) as gw:
        await gw.login("admin", PASSWORD)
        gateway.valid_tokens.discard("access-1")
        stats = await gw.queue_stats("tiny-chat")
        users = await gw.list_users()
    assert stats.waiting == 4
    assert [u.username for u in users] == ["admin"]
    assert [t.access_token for t in tokens] == ["access-1", "access-2"]


async def test_concurrent_calls_refresh_the_token_once(address: str, gateway: GatewayState) -> None:
    gateway.refresh_delay = 0.05
    async with client(address) as gw:
        await gw.login("admin", PASSWORD)
        gateway.valid_tokens.discard("access-1")
        results = await asyncio.gather(*(gw.queue_stats("tiny-chat") for _ in range(5)))
    refreshes = [c for c in gateway.calls if c.method == "IssueToken" and c.request.grant_type == "refresh_token"]
    assert len(results) == 5
    assert len(refreshes) == 1


async def test_a_refused_refresh_asks_to_log_in_again(address: str, gateway: GatewayState) -> None:
    async with client(address) as gw:
        await gw.login("admin", PASSWORD)
        gateway.valid_tokens.discard("access-1")
        gateway.refresh_tokens.clear()
        with pytest.raises(AuthError, match="log in again"):
            await gw.list_models()


async def test_admin_config_and_autoswitch(address: str, gateway: GatewayState) -> None:
    async with client(address, token="key-admin") as gw:
        config = await gw.set_model_config("tiny-chat", {"default_params.stop": "###,END", "resolution": "large"})
        enabled = await gw.set_autoswitch(True)
        plan = await gw.get_autoswitch()
        key = await gw.create_api_key(subject="bob", role="user")
        revoked = await gw.revoke_api_key("k1")
        keys = await gw.list_api_keys()
    patch = gateway.last("UpdateModelConfig").request.patch
    assert list(patch.default_params.stop) == ["###", "END"]
    assert patch.default_params.max_tokens == 64
    assert patch.default_resolution == 4
    assert config.version == 4
    assert enabled
    assert plan.enabled
    assert plan.plan[0].target_model == "b"
    assert key.key.subject == "bob"
    assert revoked.key_id == "k1"
    assert [k.key_id for k in keys] == ["k1"]
