"""OCR requests checked against their document and the backends' languages before admission, so refusals store nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aigw_server.router.ocr_input import OcrSpec
from aigw_server.runtime.errors import InvalidArgument

LanguagesOf = Callable[[str], "frozenset[str] | None"]


@dataclass(frozen=True)
class DocumentRules:
    """The most the OCR backends accept: pages per document and pixels per page."""

    max_bytes: int
    max_pages: int
    max_pixels: int


def _inspect(document: bytes, rules: DocumentRules) -> int:
    """The document's page count, or INVALID_ARGUMENT naming `document` (PyMuPDF and Pillow load on first use)."""
    from aigw_server.ocr.document_reader import DocumentLimits, inspect_document

    try:
        facts = inspect_document(document, DocumentLimits(rules.max_bytes, rules.max_pages, rules.max_pixels))
    except InvalidArgument as exc:
        raise InvalidArgument(f"document: {exc.message}", field="document") from None
    return facts.page_count


class OcrPreflight:
    """Refuses what an OCR backend would refuse (unknown language, unreadable document, pages it lacks) up front."""

    def __init__(self, rules: DocumentRules, languages_of: LanguagesOf) -> None:
        self.rules = rules
        self.languages_of = languages_of

    async def check(self, spec: OcrSpec) -> None:
        """INVALID_ARGUMENT with the field named; opening the document runs in a thread."""
        self._check_languages(spec)
        pages = await asyncio.to_thread(_inspect, spec.document, self.rules)
        if spec.first_page > pages:
            raise InvalidArgument(f"first_page: {spec.first_page} is past the document's last page ({pages})", field="first_page")

    def _check_languages(self, spec: OcrSpec) -> None:
        known = self.languages_of(spec.model.name)
        if known is None:
            return
        unknown = [code for code in spec.languages if code not in known]
        if unknown:
            raise InvalidArgument(
                f"languages: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not installed for"
                f" {spec.model.name}; installed: {', '.join(sorted(known))}",
                field="languages",
            )
