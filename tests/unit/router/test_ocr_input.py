"""OCR requests: JSON and raw uploads, resolution names and the x-resolution header, pages, sizes, models."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from aigw_server.router.catalog import DynamicModel, ModelCatalog
from aigw_server.router.ocr_input import OcrInput, parse_json_upload, validate_ocr
from aigw_server.runtime.config import ModelConfig
from aigw_server.runtime.errors import FailedPrecondition, InvalidArgument

DOC = b"%PDF-1.7 not really"
LIMIT = len(DOC) + 1


def catalog() -> ModelCatalog:
    return ModelCatalog(
        {
            "chat": ModelConfig(),
            "ocr-off": ModelConfig(kind="ocr", enabled=False),
            "tess": ModelConfig(kind="ocr", default_resolution="small"),
            "deepseek": ModelConfig(kind="ocr"),
        }
    )


def upload(**body: Any) -> OcrInput:
    return parse_json_upload(orjson.dumps(body), OcrInput(document=b"", languages=("deu",), first_page=2))


def test_json_upload_fills_every_option() -> None:
    req = upload(
        document=base64.b64encode(DOC).decode(),
        resolution="Gundam",
        languages=["eng", "fra"],
        last_page=3,
        output_format="markdown",
        include_layout=True,
        priority="high",
        model="deepseek",
        idempotency_key="k1",
        timeout_seconds=30,
        **{"async": True},
    )
    assert req.document == DOC
    assert (req.resolution, req.languages, req.first_page, req.last_page) == ("Gundam", ("eng", "fra"), 2, 3)
    assert (req.output_format, req.include_layout, req.priority, req.model) == ("markdown", True, "high", "deepseek")
    assert (req.async_mode, req.idempotency_key, req.timeout_seconds) == (True, "k1", 30.0)
    spec = validate_ocr(req, catalog(), "", 1 << 20)
    assert (spec.model.name, spec.resolution, spec.output_format) == ("deepseek", "gundam", "markdown")


def test_data_url_and_language_string_are_accepted() -> None:
    req = upload(document="data:application/pdf;base64," + base64.b64encode(DOC).decode(), languages="eng+deu")
    assert req.document == DOC
    assert req.languages == ("eng", "deu")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"document": "***"}, "document"),
        ({"document": 5}, "document"),
        ({"first_page": "1"}, "first_page"),
        ({"first_page": True}, "first_page"),
        ({"include_layout": "yes"}, "include_layout"),
        ({"languages": [1]}, "languages"),
        ({"async": 1}, "async"),
        ({"timeout_seconds": "soon"}, "timeout_seconds"),
    ],
)
def test_bad_json_upload_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        upload(**body)
    assert info.value.field == field


def test_malformed_json_upload_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="body: malformed JSON"):
        parse_json_upload(b"{", OcrInput(document=b""))


def test_default_model_and_resolution_and_header_override() -> None:
    cat = catalog()
    spec = validate_ocr(OcrInput(document=DOC), cat, "", 1 << 20)
    assert (spec.model.name, spec.resolution, spec.output_format) == ("tess", "small", "text")
    assert validate_ocr(OcrInput(document=DOC, resolution="tiny"), cat, "LARGE", 1 << 20).resolution == "large"
    cat.update({"tess": DynamicModel(enabled=True, default_resolution="large")})
    assert validate_ocr(OcrInput(document=DOC), cat, "", 1 << 20).resolution == "large"


@pytest.mark.parametrize(
    ("request_", "header", "field"),
    [
        (OcrInput(document=b""), "", "document"),
        (OcrInput(document=b"x" * (LIMIT + 1)), "", "document"),
        (OcrInput(document=DOC, resolution="huge"), "", "resolution"),
        (OcrInput(document=DOC), "4k", "resolution"),
        (OcrInput(document=DOC, first_page=-1), "", "first_page"),
        (OcrInput(document=DOC, first_page=3, last_page=2), "", "last_page"),
        (OcrInput(document=DOC, languages=("English",)), "", "languages"),
        (OcrInput(document=DOC, output_format="html"), "", "output_format"),
        (OcrInput(document=DOC, model="chat"), "", "model"),
    ],
)
def test_bad_ocr_requests_name_the_field(request_: OcrInput, header: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_ocr(request_, catalog(), header, LIMIT)
    assert info.value.field == field


def test_disabled_ocr_model_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition):
        validate_ocr(OcrInput(document=DOC, model="ocr-off"), catalog(), "", 1 << 20)
