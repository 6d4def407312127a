"""OCR requests as the router accepts them: raw or JSON uploads, resolution names, page ranges (no I/O)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from aigw_server.router.catalog import ModelCatalog, ModelEntry
from aigw_server.router.multipart import FORM_DATA, FormPart, parse_form
from aigw_server.router.openai_compat import JsonObject
from aigw_server.runtime.document_types import sniff
from aigw_server.runtime.enums import RESOLUTIONS
from aigw_server.runtime.errors import InvalidArgument, PayloadTooLarge

JSON_TYPE = "application/json"
OUTPUT_FORMATS = ("text", "markdown")
MAX_LANGUAGES = 8
LANGUAGE = re.compile(r"[a-z]{3}(_[a-z]{3,8})?")
LANGUAGE_SEPARATORS = re.compile(r"[+,\s]+")
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


def _field(body: JsonObject, name: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
    # Any: the value is of `kind` (one type or several), which the signature cannot tie to its result.
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise InvalidArgument(f"{name}: expected {expected}, got {type(value).__name__}", field=name)


def _languages(body: JsonObject, default: tuple[str, ...]) -> tuple[str, ...]:
    value = body.get("languages")
    if value is None:
        return default
    if isinstance(value, str):
        return split_languages((value,))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return split_languages(value)
    raise InvalidArgument("languages: expected a list of language codes", field="languages")


def split_languages(values: Sequence[str]) -> tuple[str, ...]:
    """Language codes from list items that may each hold several (`eng,deu`, `eng+fra`, `eng fra`)."""
    return tuple(code for value in values for code in LANGUAGE_SEPARATORS.split(value) if code)


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


FILE_FIELDS = ("file", "document")
_FORM_TEXT_FIELDS = ("model", "resolution", "output_format", "priority", "idempotency_key")
_FORM_INT_FIELDS = ("first_page", "last_page")
_FORM_BOOL_FIELDS = {"include_layout": "include_layout", "async": "async_mode"}
_FORM_BOOLS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False, "": False}


def _form_text(part: FormPart) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{part.name}: not UTF-8 text", field=part.name) from None


def _form_value(name: str, text: str) -> int | bool | float | str:
    if name in _FORM_INT_FIELDS:
        if not re.fullmatch(r"-?\d{1,9}", text.strip()):
            raise InvalidArgument(f"{name} must be an integer; got {text[:32]!r}", field=name)
        return int(text)
    if name in _FORM_BOOL_FIELDS:
        if text.strip().lower() not in _FORM_BOOLS:
            raise InvalidArgument(f"{name} must be true or false; got {text[:32]!r}", field=name)
        return _FORM_BOOLS[text.strip().lower()]
    if name == "timeout_seconds":
        try:
            return float(text)
        except ValueError:
            raise InvalidArgument(f"timeout_seconds must be a number; got {text[:32]!r}", field=name) from None
    return text


def parse_form_upload(data: bytes, content_type: str, base: OcrInput) -> OcrInput:
    """A multipart/form-data upload: the document in the `file` field, every other option a form field."""
    document: bytes | None = None
    languages: list[str] = []
    changes: dict[str, Any] = {}  # OcrInput fields of several types, for dataclasses.replace
    for part in parse_form(data, content_type):
        if part.name in FILE_FIELDS:
            if document is not None:
                raise InvalidArgument("file: send one document per request", field="file")
            document = part.data
        elif part.name == "languages":
            languages.append(_form_text(part))
        elif part.name in (*_FORM_TEXT_FIELDS, *_FORM_INT_FIELDS, *_FORM_BOOL_FIELDS, "timeout_seconds"):
            changes[_FORM_BOOL_FIELDS.get(part.name, part.name)] = _form_value(part.name, _form_text(part))
        else:
            raise InvalidArgument(f'unknown form field "{part.name[:32]}"; the document goes in "file"', field=part.name[:32])
    if document is None:
        raise InvalidArgument(
            "file: required; send the document as the form field file (curl -F file=@invoice.pdf)", field="file"
        )
    if languages:
        changes["languages"] = split_languages(languages)
    return replace(base, document=document, **changes)


def parse_upload(content_type: str, data: bytes, base: OcrInput) -> OcrInput:
    """The request with its REST upload applied: JSON with base64 `document`, a multipart form, or the raw document."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == JSON_TYPE:
        return parse_json_upload(data, base)
    if media_type == FORM_DATA:
        return parse_form_upload(data, content_type, base)
    return replace(base, document=data)


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
        raise PayloadTooLarge(
            f"document: the document is {len(request.document):,} bytes, over the limit of {max_document_bytes:,} bytes"
            f" ({max_document_bytes / 2**20:g} MiB)",
            field="document",
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
