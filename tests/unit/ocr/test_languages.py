"""Languages: the pack/langid/script table, script detection from text, and language identification."""

from __future__ import annotations

import pytest

from aigw_server.ocr.languages import (
    BY_LANGID,
    LANGUAGES,
    LanguageIdentification,
    _bundled_model,
    first_pack,
    script_from_osd,
    script_of_text,
)
from tests.unit.ocr import samples


def test_more_than_fifty_languages_each_with_a_pack_and_a_langid_code() -> None:
    assert len(LANGUAGES) >= 50
    assert len({lang.tesseract for lang in LANGUAGES}) == len(LANGUAGES)
    known = set(_bundled_model().labels)
    assert not {code for code in BY_LANGID if code not in known}


@pytest.mark.parametrize(
    ("text", "script"),
    [
        (samples.ENGLISH[0], "Latin"),
        (samples.RUSSIAN[0], "Cyrillic"),
        (samples.GREEK[0], "Greek"),
        ("これは日本語の文章です", "Japanese"),
        ("这是中文文本", "Han"),
        ("한국어 텍스트입니다", "Hangul"),
        ("هذا نص عربي", "Arabic"),
        ("12345 !!!", ""),
    ],
)
def test_script_of_text(text: str, script: str) -> None:
    assert script_of_text(text) == script


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        (samples.ENGLISH, "eng"),
        (samples.GERMAN, "deu"),
        (samples.FRENCH, "fra"),
        (samples.RUSSIAN, "rus"),
        (samples.GREEK, "ell"),
    ],
)
def test_identifies_the_language_as_a_tesseract_code(lines: list[str], code: str) -> None:
    found = LanguageIdentification().identify(" ".join(lines))
    assert found is not None
    assert found[0].tesseract == code
    assert found[1] > 0.5


def test_too_little_text_is_not_identified() -> None:
    assert LanguageIdentification().identify("Hallo Welt") is None


def test_candidates_are_limited_to_the_script() -> None:
    found = LanguageIdentification().identify(" ".join(samples.GERMAN), script="Cyrillic")
    assert found is None or found[0].script == "Cyrillic"


def test_osd_names_and_first_packs() -> None:
    assert script_from_osd("Fraktur") == "Latin"
    assert script_from_osd("Han_vert") == "Han"
    assert script_from_osd("Cyrillic") == "Cyrillic"
    installed = frozenset({"eng", "deu", "rus", "ell"})
    assert first_pack("Latin", installed) == "eng"
    assert first_pack("Latin", frozenset({"deu", "spa"})) == "deu"
    assert first_pack("Greek", installed) == "ell"
    assert first_pack("Arabic", installed) is None
