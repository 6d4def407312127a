"""The HTTP client of one OpenAI-compatible model server: pooled keep-alive connections, errors mapped once.

Upstream failures become domain errors here and nowhere else:

    HTTP 400, 413, 422 and other 4xx   InvalidArgument  the server rejected the parameters (message made safe)
    HTTP 401, 403                      Unavailable      the server refused the gateway's credentials
    HTTP 404, 408, 429                 Unavailable      model not served there / overloaded; retry elsewhere
    HTTP 5xx, malformed answers        Unavailable
    connection refused, reset, timeout Unavailable
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from aigw_server.engines.sse import SseDecoder
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


def transport_error(exc: httpx.HTTPError, timeout: float) -> Unavailable:
    """The domain error for a failed connection, read or write."""
    if isinstance(exc, httpx.TimeoutException):
        return Unavailable(f"the model server did not answer within {timeout:g}s")
    if isinstance(exc, httpx.ConnectError):
        return Unavailable("the model server is not accepting connections")
    return Unavailable("the connection to the model server failed")


def _error_code(err: Any) -> int:
    """The HTTP-like status an error event carries (vLLM puts it in `error.code`); 500 when it has none."""
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


class EngineClient:
    """One pooled HTTP/1.1 keep-alive transport per model server, created once and reused by every request.

    Chat requests go straight to the client's transport: the AsyncClient layer above it (URL merging,
    cookies, auth and redirect hooks) costs about 0.3 ms per request, which the gateway's latency budget
    cannot spare. Probes and control calls use the client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        capacity: int,
        timeout: float,
        api_key: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._headers = {"content-type": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        pool = httpx.Limits(max_connections=None, max_keepalive_connections=max(8, capacity * 2), keepalive_expiry=60.0)
        self.timeout = timeout
        self._timeouts = {"timeout": httpx.Timeout(timeout, connect=5.0).as_dict()}
        self._chat_url = httpx.URL(base_url + CHAT_PATH)
        self._transport = transport or httpx.AsyncHTTPTransport(limits=pool)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=self._headers, timeout=httpx.Timeout(timeout, connect=5.0), transport=self._transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _chat_request(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Request:
        return httpx.Request(
            "POST", self._chat_url, content=orjson.dumps(body), headers={**self._headers, **headers}, extensions=self._timeouts
        )

    async def chat(self, body: dict[str, Any], headers: dict[str, str], hide: str = "", shown: str = "") -> Any:
        """A unary chat completion's JSON answer."""
        try:
            resp = await self._transport.handle_async_request(self._chat_request(body, headers))
            try:
                content = await resp.aread()
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.timeout) from None
        if resp.status_code != 200:
            raise status_error(resp.status_code, content, hide, shown)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise Unavailable("the model server sent a malformed answer") from None

    async def stream_chat(
        self, body: dict[str, Any], headers: dict[str, str], hide: str = "", shown: str = ""
    ) -> AsyncIterator[Any]:
        """The parsed chunks of a streamed chat completion, until `[DONE]`.

        Leaving the iteration early (cancellation, deadline) closes the response, which closes its
        connection: the server sees the client gone and stops generating.
        """
        try:
            resp = await self._transport.handle_async_request(self._chat_request(body, headers))
            try:
                if resp.status_code != 200:
                    raise status_error(resp.status_code, await resp.aread(), hide, shown)
                decoder = SseDecoder()
                async for line in resp.aiter_lines():
                    data = decoder.feed(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        return
                    event = orjson.loads(data)
                    if isinstance(event, dict) and "error" in event:
                        raise status_error(_error_code(event["error"]), data.encode(), hide, shown)
                    yield event
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
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
