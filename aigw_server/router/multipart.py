"""multipart/form-data bodies (RFC 7578) split into their fields, as `curl -F` sends them (no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from aigw_server.runtime.errors import InvalidArgument

FORM_DATA = "multipart/form-data"
MAX_PARTS = 64
MAX_PART_HEADER_BYTES = 8192
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{1,70}")


@dataclass(frozen=True)
class FormPart:
    """One field of a form: its name, the file name when it is a file, its Content-Type and its bytes."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def _params(header: str) -> Message:
    """A header with parameters parsed as e-mail headers are (quoted values, RFC 2231), which form-data reuses."""
    msg = Message()
    msg["x"] = header
    return msg


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type; INVALID_ARGUMENT when it is missing or malformed."""
    value = _params(content_type).get_param("boundary", header="x")
    if not isinstance(value, str) or not _BOUNDARY.fullmatch(value) or value.endswith(" "):
        raise InvalidArgument(
            "body: multipart/form-data needs a boundary parameter in its Content-Type (curl -F sets it)", field="body"
        )
    return value


def _malformed(why: str) -> InvalidArgument:
    return InvalidArgument(f"body: malformed multipart/form-data ({why})", field="body")


def _part(head: bytes, data: bytes) -> FormPart:
    if len(head) > MAX_PART_HEADER_BYTES:
        raise _malformed("a part's headers are too long")
    disposition, content_type = "", "text/plain"
    for line in filter(None, head.decode("utf-8", errors="replace").split("\r\n")):
        name, sep, value = line.partition(":")
        if not sep:
            raise _malformed(f"a part header without a colon: {line[:40]!r}")
        key = name.strip().lower()
        if key == "content-disposition":
            disposition = value.strip()
        elif key == "content-type":
            content_type = value.strip()
    parsed = _params(disposition)
    if disposition.split(";")[0].strip().lower() != "form-data":
        raise _malformed("every part needs Content-Disposition: form-data")
    field = parsed.get_param("name", header="x")
    if not isinstance(field, str) or not field:
        raise _malformed("a part has no name")
    filename = parsed.get_param("filename", header="x")
    return FormPart(field, filename if isinstance(filename, str) else None, content_type, data)


def parse_form(data: bytes, content_type: str) -> list[FormPart]:
    """The parts of a multipart/form-data body, in order; INVALID_ARGUMENT saying what is wrong otherwise."""
    dash = b"--" + boundary_of(content_type).encode("ascii")
    start = data.find(dash)
    if start < 0 or (start > 0 and data[start - 2 : start] != b"\r\n"):
        raise _malformed("the boundary of the Content-Type does not occur in the body")
    parts: list[FormPart] = []
    pos = start + len(dash)
    while not data.startswith(b"--", pos):
        eol = data.find(b"\r\n", pos)
        if eol < 0 or data[pos:eol].strip(b" \t"):
            raise _malformed("a boundary line is followed by other text")
        head_end = data.find(b"\r\n\r\n", eol)
        if head_end < 0:
            raise _malformed("a part's headers do not end")
        body_start = head_end + 4
        end = data.find(b"\r\n" + dash, body_start)
        if end < 0:
            raise _malformed("the body ends before the closing boundary")
        parts.append(_part(data[eol + 2 : head_end], data[body_start:end]))
        if len(parts) > MAX_PARTS:
            raise _malformed(f"more than {MAX_PARTS} parts")
        pos = end + 2 + len(dash)
    return parts
