"""The client of one OpenAI-compatible model server: pooled keep-alive connections, errors mapped once.

Upstream failures become domain errors here and nowhere else:

    HTTP 400, 413, 422 and other 4xx   InvalidArgument  the server rejected the parameters (message made safe)
    HTTP 401, 403                      Unavailable      the server refused the gateway's credentials
    HTTP 404, 408, 429                 Unavailable      model not served there / overloaded; retry elsewhere
    HTTP 5xx, malformed answers        Unavailable
    connection refused, reset, timeout Unavailable
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from aigw_server.engines import http1
from aigw_server.engines.sse import LineSplitter, SseDecoder
from aigw_server.runtime.errors import GatewayError, InvalidArgument, Unavailable

CHAT_PATH = "/v1/chat/completions"
PROBE_TIMEOUT = httpx.Timeout(5.0)
MAX_MESSAGE = 300
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def _detail(body: bytes) -> str:
    """The human part of an error body: OpenAI `error.message`, FastAPI `detail`, or plain text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))
        if isinstance(err, str):
            return err
        detail = data.get("detail", data.get("message", ""))
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return str(detail)
    return str(data)


def safe_message(body: bytes, hide: str, shown: str) -> str:
    """The upstream's reason, one line, bounded, naming our model instead of its internal path or name."""
    text = _UNSAFE.sub(" ", _detail(body)).strip()
    if hide:
        text = text.replace(hide, shown)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text or "no reason given"


def status_error(status: int, body: bytes, hide: str = "", shown: str = "") -> GatewayError:
    """The domain error for an upstream HTTP error status."""
    if status in (401, 403):
        return Unavailable("the model server refused the gateway's credentials")
    if status == 404:
        return Unavailable(
            f"the model server does not serve model {shown!r}" if shown else "the model server has no such endpoint"
        )
    if status in (408, 429):
        return Unavailable("the model server is overloaded; try again", retry_after=1.0)
    if 400 <= status < 500:
        return InvalidArgument(f"the model server rejected the request: {safe_message(body, hide, shown)}")
    return Unavailable(f"the model server failed (HTTP {status})")


def transport_error(exc: httpx.HTTPError | http1.HttpError, timeout: float) -> Unavailable:
    """The domain error for a failed connection, read or write."""
    if isinstance(exc, (httpx.TimeoutException, http1.TimedOut)):
        return Unavailable(f"the model server did not answer within {timeout:g}s")
    if isinstance(exc, (httpx.ConnectError, http1.ConnectFailed)):
        return Unavailable("the model server is not accepting connections")
    return Unavailable("the connection to the model server failed")


def _error_code(err: Any) -> int:
    """The HTTP-like status an error event carries (vLLM puts it in `error.code`); 500 when it has none."""
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


class EngineClient:
    """The client of one model server, created once and reused by every request.

    Chat requests (unary and streamed) go through a lean HTTP/1.1 keep-alive pool (`aigw_server.engines.http1`):
    a general-purpose client's bookkeeping cost about half of the router's Python time per request. Probes
    and control calls, off the hot path, use httpx.
    """

    def __init__(self, base_url: str, *, capacity: int, timeout: float, api_key: str = "") -> None:
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._chat_path = urlsplit(base_url).path.rstrip("/") + CHAT_PATH
        self._pool = http1.Pool(base_url, max_idle=max(8, capacity * 2), idle_expiry=60.0, connect_timeout=5.0)
        self._http = httpx.AsyncClient(base_url=base_url, headers=self._headers, timeout=httpx.Timeout(timeout, connect=5.0))

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._http.aclose()

    async def _post_chat(self, body: dict[str, Any], headers: dict[str, str]) -> http1.Response:
        return await self._pool.request(
            "POST", self._chat_path, {**self._headers, **headers}, orjson.dumps(body), timeout=self.timeout
        )

    async def chat(self, body: dict[str, Any], headers: dict[str, str], hide: str = "", shown: str = "") -> Any:
        """A unary chat completion's JSON answer."""
        try:
            async with await self._post_chat(body, headers) as resp:
                content = await resp.read()
        except http1.HttpError as exc:
            raise transport_error(exc, self.timeout) from None
        if resp.status != 200:
            raise status_error(resp.status, content, hide, shown)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise Unavailable("the model server sent a malformed answer") from None

    async def stream_chat(
        self, body: dict[str, Any], headers: dict[str, str], hide: str = "", shown: str = ""
    ) -> AsyncGenerator[Any, None]:
        """The parsed chunks of a streamed chat completion, until `[DONE]`.

        Leaving the iteration early (cancellation, deadline, an error) closes the response's connection:
        the server sees the client gone and stops generating.
        """
        try:
            async with await self._post_chat(body, headers) as resp:
                if resp.status != 200:
                    raise status_error(resp.status, await resp.read(), hide, shown)
                events = SseDecoder()
                lines = LineSplitter()
                async for part in resp.aiter_bytes():
                    for line in lines.feed(part):
                        data = events.feed(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            return
                        event = orjson.loads(data)
                        if isinstance(event, dict) and "error" in event:
                            raise status_error(_error_code(event["error"]), data.encode(), hide, shown)
                        yield event
        except http1.HttpError as exc:
            raise transport_error(exc, self.timeout) from None
        except orjson.JSONDecodeError:
            raise Unavailable("the model server sent a malformed stream chunk") from None

    async def healthy(self, path: str) -> bool:
        """Whether the server answers its health endpoint with 2xx right now."""
        try:
            resp = await self._http.get(path, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return resp.is_success

    async def metrics_text(self) -> str | None:
        """The Prometheus exposition, or None where the server exports none."""
        try:
            resp = await self._http.get("/metrics", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return None
        return resp.text if resp.is_success else None

    async def control(
        self, method: str, path: str, params: dict[str, Any] | None = None, *, body: dict[str, Any] | None = None
    ) -> Any:
        """A call to a control endpoint (vLLM dev mode: /sleep, /wake_up, /collective_rpc, /is_sleeping)."""
        try:
            resp = await self._http.request(
                method, path, params=params, json=body, timeout=httpx.Timeout(self.timeout, connect=5.0)
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.timeout) from None
        if not resp.is_success:
            raise status_error(resp.status_code, resp.content)
        return orjson.loads(resp.content) if resp.content else None
