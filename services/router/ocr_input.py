"""OCR requests as the router accepts them: raw or JSON uploads, resolution names, page ranges (no I/O)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from typing import Any

import orjson

from aigw_common.documents import sniff
from aigw_common.errors import InvalidArgument
from services.router.catalog import ModelCatalog, ModelEntry

RESOLUTIONS = ("tiny", "small", "base", "large", "gundam")
OUTPUT_FORMATS = ("text", "markdown")
MAX_LANGUAGES = 8
LANGUAGE = re.compile(r"[a-z]{3}(_[a-z]{3,8})?")
DATA_URL = re.compile(rb"data:[\w.+/-]*;base64,")


@dataclass(frozen=True)
class OcrInput:
    """An OCR request as a client sent it, not yet validated."""

    document: bytes
    model: str = ""
    resolution: str = ""
    languages: tuple[str, ...] = ()
    first_page: int = 0
    last_page: int = 0
    output_format: str = ""
    include_layout: bool = False
    priority: str = ""
    async_mode: bool = False
    idempotency_key: str = ""
    timeout_seconds: float = 0.0


@dataclass(frozen=True)
class OcrSpec:
    """A validated OCR request with the model's default resolution applied."""

    model: ModelEntry
    document: bytes
    resolution: str
    languages: tuple[str, ...]
    first_page: int
    last_page: int
    output_format: str
    include_layout: bool


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise InvalidArgument(f"{name}: expected {expected}, got {type(value).__name__}", field=name)


def _languages(body: dict[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    value = body.get("languages")
    if value is None:
        return default
    if isinstance(value, str):
        return tuple(p for p in re.split(r"[+,\s]+", value) if p)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidArgument("languages: expected a list of language codes", field="languages")


def decode_document(value: str) -> bytes:
    """The bytes of a base64 `document` (a data: URL prefix is allowed); INVALID_ARGUMENT when not base64."""
    raw = value.encode("ascii", errors="replace")
    prefix = DATA_URL.match(raw)
    if prefix:
        raw = raw[prefix.end() :]
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("document: not valid base64", field="document") from None


def parse_json_upload(data: bytes, base: OcrInput) -> OcrInput:
    """Options from a JSON upload `{"document": base64, ...}`; fields it leaves out keep `base`'s values."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"body: malformed JSON ({exc.msg} at position {exc.pos})", field="body") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body: expected a JSON object", field="body")
    document = _field(body, "document", str, "a base64 string", None)
    number = (int, float)
    return replace(
        base,
        document=decode_document(document) if document is not None else base.document,
        model=_field(body, "model", str, "a string", base.model),
        resolution=_field(body, "resolution", str, "a string", base.resolution),
        languages=_languages(body, base.languages),
        first_page=_field(body, "first_page", int, "an integer", base.first_page),
        last_page=_field(body, "last_page", int, "an integer", base.last_page),
        output_format=_field(body, "output_format", str, "a string", base.output_format),
        include_layout=_field(body, "include_layout", bool, "true or false", base.include_layout),
        priority=_field(body, "priority", str, "a string", base.priority),
        async_mode=_field(body, "async", bool, "true or false", base.async_mode),
        idempotency_key=_field(body, "idempotency_key", str, "a string", base.idempotency_key),
        timeout_seconds=float(_field(body, "timeout_seconds", number, "a number", base.timeout_seconds)),
    )


def parse_resolution(header: str, field_value: str, default: str) -> str:
    """The resolution mode: the x-resolution header wins, then the field, then the model's default."""
    raw = (header or field_value).strip().lower()
    if not raw:
        return default
    if raw not in RESOLUTIONS:
        source = "x-resolution" if header else "resolution"
        raise InvalidArgument(f"{source}: {raw[:32]!r} is not a resolution (use {', '.join(RESOLUTIONS)})", field="resolution")
    return raw


def _check_pages(first: int, last: int) -> None:
    if first < 0:
        raise InvalidArgument("first_page: must be 1 or more (0 means the first page)", field="first_page")
    if last < 0:
        raise InvalidArgument("last_page: must be 1 or more (0 means the last page)", field="last_page")
    if first and last and last < first:
        raise InvalidArgument(f"last_page: {last} is before first_page {first}", field="last_page")


def _check_languages(languages: tuple[str, ...]) -> None:
    if len(languages) > MAX_LANGUAGES:
        raise InvalidArgument(f"languages: at most {MAX_LANGUAGES}", field="languages")
    for i, code in enumerate(languages):
        if not LANGUAGE.fullmatch(code):
            raise InvalidArgument(f"languages[{i}]: {code[:16]!r} is not a Tesseract language code (e.g. eng)", field="languages")


def validate_ocr(request: OcrInput, catalog: ModelCatalog, resolution_header: str, max_document_bytes: int) -> OcrSpec:
    """An OcrSpec, or INVALID_ARGUMENT naming the field; NOT_FOUND / FAILED_PRECONDITION for the model."""
    if not request.document:
        raise InvalidArgument("document: the upload is empty", field="document")
    if len(request.document) > max_document_bytes:
        raise InvalidArgument(
            f"document: {len(request.document)} bytes; the limit is {max_document_bytes} bytes", field="document"
        )
    sniff(request.document, field="document")  # a disguised upload is refused before anything is stored
    _check_pages(request.first_page, request.last_page)
    _check_languages(request.languages)
    output_format = request.output_format.strip().lower() or "text"
    if output_format not in OUTPUT_FORMATS:
        raise InvalidArgument(f"output_format: {output_format[:32]!r} is not text or markdown", field="output_format")
    model = catalog.resolve(request.model, "ocr")
    resolution = parse_resolution(resolution_header, request.resolution, model.default_resolution)
    return OcrSpec(
        model,
        request.document,
        resolution,
        request.languages,
        request.first_page,
        request.last_page,
        output_format,
        request.include_layout,
    )
