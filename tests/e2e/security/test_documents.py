"""A PDF carrying a JavaScript action, a launch action and links to local files is read as text only."""

from __future__ import annotations

from typing import Any

import pymupdf

from tests.e2e.security.conftest import SecureMesh

VISIBLE = "Quarterly report for the security review"
mupdf: Any = pymupdf  # PyMuPDF ships no type hints


def hostile_pdf() -> bytes:
    doc = mupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), VISIBLE, fontsize=14)
    page.insert_link({"kind": mupdf.LINK_URI, "from": mupdf.Rect(72, 100, 300, 120), "uri": "file:///etc/passwd"})
    page.insert_link({"kind": mupdf.LINK_LAUNCH, "from": mupdf.Rect(72, 130, 300, 150), "file": "/bin/sh"})
    catalog = doc.pdf_catalog()
    doc.xref_set_key(catalog, "OpenAction", "<</S/JavaScript/JS(app.launchURL('file:///etc/passwd'))>>")
    doc.xref_set_key(catalog, "Names", "<</JavaScript<</Names[(x)<</S/JavaScript/JS(this.exportDataObject())>>]>>>>")
    data: bytes = doc.tobytes()
    doc.close()
    return data


def test_a_pdf_with_actions_and_file_links_yields_its_text_only(secure: SecureMesh) -> None:
    with secure.client() as client:
        reply = client.post(
            "/api/ocr", content=hostile_pdf(), headers={**secure.bearer(secure.token()), "content-type": "application/pdf"}
        )
    assert reply.status_code == 200, reply.text
    text = reply.json()["text"]
    assert VISIBLE in text
    assert "root:x:0:0" not in reply.text
    assert "app.launchURL" not in reply.text
