"""POST /v1/chat/completions and GET /v1/models, over raw HTTP and through the official `openai` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest

from tests.e2e.conformance.conftest import Gateway
from tests.e2e.conformance.contract import assert_incremental, job_of, ok_json, read_sse, waiting_out_rate_limits

MAX_TOKENS = 8
STREAM_TOKENS = 16
MESSAGES: list[Any] = [{"role": "user", "content": "Count from one to ten."}]


class SdkRateLimitRetry(httpx2.BaseTransport):
    """The SDK's transport (the SDK is built on httpx2), waiting out short rate limits."""

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport(retries=0)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return waiting_out_rate_limits(lambda: self._inner.handle_request(request))

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at the gateway, with the admin's access token as its API key."""
    http_client = httpx2.Client(transport=SdkRateLimitRetry(), timeout=120)
    with openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=gateway.admin_token, max_retries=0, http_client=http_client
    ) as client:
        yield client


def completion_body(gateway: Gateway, **extra: Any) -> dict[str, Any]:
    return {"model": gateway.chat_model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **extra}


def test_a_completion_is_openai_json_and_its_id_names_the_request(http: httpx.Client, gateway: Gateway) -> None:
    body = ok_json(http.post("/v1/chat/completions", json=completion_body(gateway), headers=gateway.admin))
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == gateway.chat_model
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    job = job_of(http, gateway.admin, body["id"].removeprefix("chatcmpl-"))
    assert job["chat_result"]["message"]["content"] == choice["message"]["content"]


def test_a_streamed_completion_is_sse_chunks_ending_with_done(http: httpx.Client, gateway: Gateway) -> None:
    body = completion_body(gateway, stream=True, stream_options={"include_usage": True})
    with http.stream("POST", "/v1/chat/completions", json=body, headers=gateway.admin) as reply:
        events = read_sse(reply)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert len(chunks) >= 4, chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert sum(1 for text in contents if text) >= 2
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] in (["stop"], ["length"])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_prefer_respond_async_answers_the_request_at_once(http: httpx.Client, gateway: Gateway) -> None:
    reply = http.post("/v1/chat/completions", json=completion_body(gateway), headers={**gateway.admin, "prefer": "respond-async"})
    body = ok_json(reply)
    assert body["object"] == "chat.completion.request"
    assert body["status"] == "QUEUED"
    assert body["id"] == f"chatcmpl-{body['request_id']}"


def test_models_are_listed_as_openai_model_cards(http: httpx.Client, gateway: Gateway) -> None:
    body = ok_json(http.get("/v1/models", headers=gateway.admin))
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert {gateway.chat_model, gateway.ocr_model} <= set(cards)
    assert {card["object"] for card in cards.values()} == {"model"}
    assert all(isinstance(card["created"], int) for card in cards.values())


def test_the_sdk_completes_a_chat(sdk: openai.OpenAI, gateway: Gateway) -> None:
    completion = sdk.chat.completions.create(model=gateway.chat_model, messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == gateway.chat_model
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens >= 1


def test_the_sdk_streams_tokens_as_they_are_generated(sdk: openai.OpenAI, gateway: Gateway) -> None:
    stream = sdk.chat.completions.create(model=gateway.chat_model, messages=MESSAGES, max_tokens=STREAM_TOKENS, stream=True)
    arrivals = [(time.monotonic(), chunk) for chunk in stream]
    texts = [at for at, c in arrivals if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3, arrivals
    assert len({c.id for _, c in arrivals}) == 1
    assert arrivals[-1][1].choices[0].finish_reason in {"stop", "length"}
    assert_incremental(texts[0], texts[-1])


def test_the_sdk_lists_the_models(sdk: openai.OpenAI, gateway: Gateway) -> None:
    models = list(sdk.models.list())
    ids = {m.id for m in models}
    assert {gateway.chat_model, gateway.ocr_model} <= ids
    for model in models:
        assert model.object == "model"
        assert model.owned_by
        assert model.created > 0


def test_the_sdk_sees_an_unknown_model_as_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="conformance-no-such-model", messages=MESSAGES, max_tokens=MAX_TOKENS)
