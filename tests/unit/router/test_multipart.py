"""multipart/form-data as curl and browsers send it, and the malformed bodies refused with a clear reason."""

from __future__ import annotations

import httpx
import pytest

from aigw_server.router.multipart import parse_form
from aigw_server.router.ocr_input import OcrInput, parse_upload
from aigw_server.runtime.errors import InvalidArgument


def encoded(files: dict[str, tuple[str, bytes, str]], data: dict[str, str]) -> tuple[bytes, str]:
    """The body and Content-Type httpx (like curl -F) writes for a form."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_a_file_and_fields_come_back_as_sent() -> None:
    document = b"%PDF-1.7\r\n--not a boundary\r\n\x00\xff" * 50
    body, content_type = encoded({"file": ("in voice;1.pdf", document, "application/pdf")}, {"resolution": "base"})
    parts = parse_form(body, content_type)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("resolution", None, "text/plain"),
        ("file", "in voice;1.pdf", "application/pdf"),
    ]
    assert parts[1].data == document
    assert parts[0].data == b"base"


def test_a_form_fills_the_ocr_request() -> None:
    form = {"languages": "eng,deu", "first_page": "2", "async": "true", "timeout_seconds": "30"}
    body, content_type = encoded({"file": ("a.png", b"\x89PNG", "image/png")}, form)
    got = parse_upload(content_type, body, OcrInput(b""))
    assert (got.document, got.languages, got.first_page, got.async_mode, got.timeout_seconds) == (
        b"\x89PNG",
        ("eng", "deu"),
        2,
        True,
        30.0,
    )


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data", "needs a boundary"),
        (b"--a\r\n\r\nx\r\n--a--", "multipart/form-data; boundary=b", "does not occur"),
        (b'--b\r\ncontent-disposition: form-data; name="f"\r\n\r\nno end', "multipart/form-data; boundary=b", "ends before"),
        (b"--b\r\ncontent-type: text/plain\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", "form-data"),
        (b"--b\r\ncontent-disposition: form-data\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", "no name"),
    ],
)
def test_malformed_forms_say_what_is_wrong(body: bytes, content_type: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why) as refused:
        parse_form(body, content_type)
    assert refused.value.field == "body"
