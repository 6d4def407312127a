"""The input of a token request: typed fields (gRPC) or the raw REST body, form-encoded or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs

from aigw_server.runtime.errors import InvalidArgument

GRANT_TYPES = ("password", "refresh_token")
FIELDS = ("grant_type", "username", "password", "refresh_token")
MAX_BODY_BYTES = 16 * 1024
MAX_FIELD_CHARS = 8192
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


@dataclass(frozen=True)
class TokenRequest:
    """What a client asks the token endpoint for."""

    grant_type: str = "password"
    username: str = ""
    password: str = ""
    refresh_token: str = ""


def parse_token_request(typed: dict[str, str], content_type: str, body: bytes, over_rest: bool = False) -> TokenRequest:
    """Merges the typed fields with the body's (typed ones win) and checks the grant type and required fields.

    Over REST the typed fields can only come from the URL's query string, which proxies and access logs
    keep: a token request that puts anything there is refused, so credentials are never in a URL.
    """
    in_url = sorted(k for k, v in typed.items() if v) if over_rest else []
    if in_url:
        raise InvalidArgument(f"{in_url[0]}: send credentials in the request body, never in the URL", field=in_url[0])
    values = _body_fields(content_type, body) if body else {}
    values.update({k: v for k, v in typed.items() if v})
    for name in FIELDS:
        if len(values.get(name, "")) > MAX_FIELD_CHARS:
            raise InvalidArgument(f"{name}: too long", field=name)
    request = TokenRequest(
        grant_type=values.get("grant_type") or "password",
        username=values.get("username", ""),
        password=values.get("password", ""),
        refresh_token=values.get("refresh_token", ""),
    )
    _check(request)
    return request


def _check(request: TokenRequest) -> None:
    if request.grant_type not in GRANT_TYPES:
        raise InvalidArgument("grant_type: must be 'password' or 'refresh_token'", field="grant_type")
    if request.grant_type == "refresh_token" and not request.refresh_token:
        raise InvalidArgument("refresh_token: required for grant_type refresh_token", field="refresh_token")
    if request.grant_type == "password":
        for name in ("username", "password"):
            if not getattr(request, name):
                raise InvalidArgument(f"{name}: required for grant_type password", field=name)


def _body_fields(content_type: str, body: bytes) -> dict[str, str]:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgument(f"body: larger than {MAX_BODY_BYTES} bytes", field="form")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON or (not media and body.lstrip().startswith(b"{")):
        return _json_fields(body)
    if media in (FORM, ""):
        return _form_fields(body)
    raise InvalidArgument(f"body: unsupported content type {media!r}; send {FORM} or {JSON}", field="form")


def _json_fields(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument("body: malformed JSON", field="form") from None
    if not isinstance(data, dict):
        raise InvalidArgument("body: expected a JSON object", field="form")
    fields: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"{name}: expected a string", field=name)
        fields[name] = value
    return fields


def _form_fields(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text.strip()), max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument("body: malformed form encoding", field="form") from None
    fields: dict[str, str] = {}
    for name in FIELDS:
        values = parsed.get(name, [])
        if len(values) > 1:
            raise InvalidArgument(f"{name}: given more than once", field=name)
        if values:
            fields[name] = values[0]
    return fields
