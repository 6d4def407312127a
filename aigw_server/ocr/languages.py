"""Languages and scripts: Tesseract pack codes, py3langid codes, OSD script names and text-based identification."""

from __future__ import annotations

import functools
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier


@dataclass(frozen=True)
class Language:
    """One language: its Tesseract pack, its py3langid code and the script it is written in."""

    tesseract: str
    langid: str
    script: str
    name: str


def _table(script: str, rows: str) -> list[Language]:
    out = []
    for row in rows.split(";"):
        tess, lid, name = row.strip().split(":")
        out.append(Language(tess, lid, script, name))
    return out


LANGUAGES: tuple[Language, ...] = tuple(
    _table(
        "Latin",
        "afr:af:Afrikaans; sqi:sq:Albanian; eus:eu:Basque; bre:br:Breton; bos:bs:Bosnian; cat:ca:Catalan;"
        " hrv:hr:Croatian; ces:cs:Czech; dan:da:Danish; nld:nl:Dutch; eng:en:English; epo:eo:Esperanto;"
        " est:et:Estonian; fao:fo:Faroese; fin:fi:Finnish; fra:fr:French; fry:fy:Frisian; glg:gl:Galician;"
        " deu:de:German; hat:ht:Haitian Creole; hun:hu:Hungarian; isl:is:Icelandic; ind:id:Indonesian; gle:ga:Irish;"
        " ita:it:Italian; jav:jv:Javanese; lat:la:Latin; lav:lv:Latvian; lit:lt:Lithuanian; ltz:lb:Luxembourgish;"
        " msa:ms:Malay; mlt:mt:Maltese; nor:no:Norwegian; oci:oc:Occitan; pol:pl:Polish; por:pt:Portuguese;"
        " que:qu:Quechua; ron:ro:Romanian; gla:gd:Scottish Gaelic; slk:sk:Slovak; slv:sl:Slovenian; spa:es:Spanish;"
        " swa:sw:Swahili; swe:sv:Swedish; tgl:tl:Tagalog; tur:tr:Turkish; uzb:uz:Uzbek; vie:vi:Vietnamese;"
        " cym:cy:Welsh; yor:yo:Yoruba; aze:az:Azerbaijani; kmr:ku:Kurdish",
    )
    + _table(
        "Cyrillic",
        "rus:ru:Russian; ukr:uk:Ukrainian; bel:be:Belarusian; bul:bg:Bulgarian; srp:sr:Serbian; mkd:mk:Macedonian;"
        " kaz:kk:Kazakh; kir:ky:Kyrgyz; mon:mn:Mongolian; tat:tt:Tatar; tgk:tg:Tajik",
    )
    + _table("Greek", "ell:el:Greek")
    + _table("Arabic", "ara:ar:Arabic; fas:fa:Persian; urd:ur:Urdu; pus:ps:Pashto; uig:ug:Uyghur")
    + _table("Hebrew", "heb:he:Hebrew")
    + _table("Devanagari", "hin:hi:Hindi; mar:mr:Marathi; nep:ne:Nepali; san:sa:Sanskrit")
    + _table("Bengali", "ben:bn:Bengali; asm:as:Assamese")
    + _table("Han", "chi_sim:zh:Chinese (simplified); chi_tra:yue:Chinese (traditional, Cantonese)")
    + _table("Japanese", "jpn:ja:Japanese")
    + _table("Hangul", "kor:ko:Korean")
    + _table("Thai", "tha:th:Thai")
    + _table("Lao", "lao:lo:Lao")
    + _table("Khmer", "khm:km:Khmer")
    + _table("Myanmar", "mya:my:Burmese")
    + _table("Tibetan", "dzo:dz:Dzongkha")
    + _table("Armenian", "hye:hy:Armenian")
    + _table("Georgian", "kat:ka:Georgian")
    + _table("Tamil", "tam:ta:Tamil")
    + _table("Telugu", "tel:te:Telugu")
    + _table("Kannada", "kan:kn:Kannada")
    + _table("Malayalam", "mal:ml:Malayalam")
    + _table("Gujarati", "guj:gu:Gujarati")
    + _table("Gurmukhi", "pan:pa:Punjabi")
    + _table("Oriya", "ori:or:Odia")
    + _table("Sinhala", "sin:si:Sinhala")
    + _table("Ethiopic", "amh:am:Amharic")
)

BY_TESSERACT: dict[str, Language] = {lang.tesseract: lang for lang in LANGUAGES}
BY_LANGID: dict[str, Language] = {lang.langid: lang for lang in LANGUAGES} | {
    "nn": BY_TESSERACT["nor"],
    "wuu": BY_TESSERACT["chi_sim"],
}

# The first pack tried for a script before the text's language is identified.
PRIMARY_PACK: dict[str, str] = {
    "Latin": "eng",
    "Cyrillic": "rus",
    "Han": "chi_sim",
}

# OSD names that mean the same script as one of ours.
_OSD_ALIASES = {
    "Fraktur": "Latin",
    "Vietnamese": "Latin",
    "Han_vert": "Han",
    "Hangul_vert": "Hangul",
    "Katakana": "Japanese",
    "Hiragana": "Japanese",
    "Korean": "Hangul",
}

# First word of a character's Unicode name -> script.
_UNICODE_SCRIPTS = {
    "CJK": "Han",
    "HIRAGANA": "Japanese",
    "KATAKANA": "Japanese",
    "HANGUL": "Hangul",
    "MYANMAR": "Myanmar",
    "ORIYA": "Oriya",
    "GURMUKHI": "Gurmukhi",
    "ETHIOPIC": "Ethiopic",
}
SCRIPTS: frozenset[str] = frozenset(lang.script for lang in LANGUAGES)

MIN_LETTERS_TO_IDENTIFY = 12


def script_from_osd(name: str) -> str:
    """Our script name for an OSD script name ("Latin", "Cyrillic", ... or the name itself when unknown)."""
    return _OSD_ALIASES.get(name, name)


def languages_of_script(script: str) -> list[Language]:
    """Languages written in `script`, in table order."""
    return [lang for lang in LANGUAGES if lang.script == script]


def first_pack(script: str, allowed: frozenset[str]) -> str | None:
    """The pack to try first for a script: its primary language, else any allowed language of that script."""
    primary = PRIMARY_PACK.get(script)
    if primary in allowed:
        return primary
    for lang in languages_of_script(script):
        if lang.tesseract in allowed:
            return lang.tesseract
    return None


def _char_script(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    if not name:
        return None
    word = name.split(" ", 1)[0]
    if word in _UNICODE_SCRIPTS:
        return _UNICODE_SCRIPTS[word]
    script = word.capitalize()
    return script if script in SCRIPTS else None


def script_of_text(text: str) -> str:
    """The dominant script of the letters in `text` ("" when there are none); kana anywhere makes Han text Japanese."""
    counts = Counter(s for ch in text if ch.isalpha() and (s := _char_script(ch)))
    if not counts:
        return ""
    best = counts.most_common(1)[0][0]
    if best == "Han" and counts.get("Japanese"):
        return "Japanese"
    return best


def letter_count(text: str) -> int:
    """How many letters `text` holds."""
    return sum(1 for ch in text if ch.isalpha())


@functools.cache
def _bundled_model() -> LanguageIdentifier:
    """py3langid's bundled model (about a second to load): read once per process, on first use, never changed after."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageIdentification:
    """Identifies the language of recognised text with py3langid (ranking leaves the model unchanged: thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _identifier(self) -> LanguageIdentifier:
        with self._lock:
            return _bundled_model()

    def identify(self, text: str, script: str = "") -> tuple[Language, float] | None:
        """The most likely language of `text` among those written in `script` (any script when empty), with its probability.

        None when the text is too short to tell or no candidate has a Tesseract pack.
        """
        if letter_count(text) < MIN_LETTERS_TO_IDENTIFY:
            return None
        script = script or script_of_text(text)
        ranked: list[tuple[str, float]] = self._identifier().rank(text)
        candidates = [(BY_LANGID[code], p) for code, p in ranked if code in BY_LANGID]
        if script:
            candidates = [(lang, p) for lang, p in candidates if lang.script == script]
        if not candidates:
            return None
        total = sum(p for _, p in candidates) or 1.0
        lang, p = candidates[0]
        return lang, p / total
