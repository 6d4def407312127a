"""Tesseract, the embedded OCR engine: the real binary per page, OSD for orientation and script, TSV for layout."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from PIL import Image

from aigw_server.ocr.languages import BY_TESSERACT, LanguageIdentification, first_pack, script_from_osd, script_of_text
from aigw_server.ocr.ocr_engine import EngineHealth, EngineState
from aigw_server.ocr.resolution import TESSERACT_RENDER, Mode, RenderSpec
from aigw_server.ocr.results import Box, Line, PageImage, Recognition, RecognizeOptions, Word
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import BackendConfig, ModelConfig
from aigw_server.runtime.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

# Below this orientation confidence OSD's guess is noise (upright pages score 3-10, turned ones 5-20).
MIN_ORIENTATION_CONFIDENCE = 2.0
# A language guess below this probability keeps the first pack's reading.
MIN_LANGUAGE_PROBABILITY = 0.5
# With explicit languages, a reading this poor makes it worth asking OSD whether the page is turned.
DOUBTFUL_CONFIDENCE = 60.0
_TRANSPOSE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
_NON_LANGUAGE_PACKS = {"osd", "equ", "snum"}


@dataclass(frozen=True)
class Orientation:
    """Tesseract's OSD verdict: degrees to turn the page clockwise, and the script it saw."""

    rotate: int
    orientation_confidence: float
    script: str
    script_confidence: float


def parse_osd(output: str) -> Orientation | None:
    """The fields of `tesseract --psm 0` output, or None when it said nothing usable."""
    fields = dict(re.findall(r"^([A-Za-z ]+):\s*(\S+)\s*$", output, flags=re.MULTILINE))
    try:
        return Orientation(
            int(fields["Rotate"]) % 360,
            float(fields["Orientation confidence"]),
            script_from_osd(fields["Script"]),
            float(fields["Script confidence"]),
        )
    except (KeyError, ValueError):
        return None


def parse_tsv(tsv: str) -> tuple[str, float, tuple[Line, ...]]:
    """Text (lines by newline, paragraphs by a blank line), mean word confidence and lines from TSV output."""
    groups: dict[tuple[int, int, int], list[Word]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        word = Word(cols[11].strip(), max(0.0, float(cols[10])), Box(left, top, width, height))
        groups.setdefault((int(cols[2]), int(cols[3]), int(cols[4])), []).append(word)
    lines = tuple(_line(words) for words in groups.values())
    words = [w for ws in groups.values() for w in ws]
    confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
    return _text(list(groups), lines), confidence, lines


def _line(words: list[Word]) -> Line:
    x = min(w.box.x for w in words)
    y = min(w.box.y for w in words)
    right = max(w.box.x + w.box.width for w in words)
    bottom = max(w.box.y + w.box.height for w in words)
    confidence = sum(w.confidence for w in words) / len(words)
    return Line(" ".join(w.text for w in words), confidence, Box(x, y, right - x, bottom - y), tuple(words))


def _text(keys: list[tuple[int, int, int]], lines: tuple[Line, ...]) -> str:
    parts: list[str] = []
    previous: tuple[int, int] | None = None
    for (block, par, _), line in zip(keys, lines, strict=True):
        if previous is not None:
            parts.append("\n\n" if (block, par) != previous else "\n")
        parts.append(line.text)
        previous = (block, par)
    return "".join(parts)


def encode(image: Image.Image) -> bytes:
    """The page as PGM: uncompressed, so neither side spends time on compression."""
    out = BytesIO()
    image.convert("L").save(out, format="PPM")
    return out.getvalue()


def turn(image: Image.Image, rotate: int) -> Image.Image:
    """The image turned `rotate` degrees clockwise."""
    method = _TRANSPOSE.get(rotate % 360)
    return image.transpose(method) if method is not None else image


@dataclass(frozen=True)
class Reading:
    """One pass of Tesseract over a page with one set of packs."""

    text: str
    confidence: float
    lines: tuple[Line, ...]

    @property
    def doubtful(self) -> bool:
        return not self.lines or self.confidence < DOUBTFUL_CONFIDENCE


class TesseractEngine:
    """Runs `tesseract` per page in the worker pool (one thread each, OMP_THREAD_LIMIT=1, pages in parallel)."""

    name = "tesseract"

    def __init__(self, backend: BackendConfig, pool: WorkerPool, identification: LanguageIdentification) -> None:
        self.binary = backend.command[0] if backend.command else "tesseract"
        self.required = tuple(backend.languages)
        self.timeout = backend.request_timeout_seconds
        self.pool = pool
        self.identification = identification
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        self._installed: frozenset[str] = frozenset()
        self._model = ""
        self._state = EngineState.IDLE
        self._detail = ""

    @property
    def concurrency(self) -> int:
        return self.pool.size

    def render_spec(self, mode: Mode) -> RenderSpec:
        return TESSERACT_RENDER[mode]

    def languages(self) -> frozenset[str]:
        return self._installed - _NON_LANGUAGE_PACKS

    def health(self) -> EngineHealth:
        return EngineHealth(self._state, self._model, self._detail)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Nothing to watch: a tesseract run that fails fails only its page."""

    async def load(self, name: str, model: ModelConfig) -> str:
        self._state = EngineState.LOADING
        try:
            version, installed = await self.pool.run(self._probe)
        except Unavailable as exc:
            self._state, self._detail = EngineState.IDLE, exc.message
            raise
        missing = sorted((set(self.required) | set(model.languages)) - installed)
        if missing:
            self._state = EngineState.IDLE
            self._detail = f"missing language packs: {', '.join(missing)}"
            raise FailedPrecondition(f"{self._detail}; installed: {', '.join(sorted(installed))}")
        self._installed, self._model, self._state = installed, name, EngineState.READY
        self._detail = version if "osd" in installed else f"{version}; no osd pack: no rotation or script detection"
        # The language model (~95 MB resident) loads with the first page that needs it, not here: an idle
        # backend stays small, and the first auto-detected page pays about a second once.
        return f"{version} ready with {', '.join(sorted(self.languages()))}"

    def _probe(self) -> tuple[str, frozenset[str]]:
        version = self._run([self.binary, "--version"]).splitlines()[0].strip()
        listing = self._run([self.binary, "--list-langs"]).splitlines()[1:]
        return version, frozenset(line.strip() for line in listing if line.strip())

    def _exec(self, args: list[str], data: bytes | None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(args, input=data, capture_output=True, timeout=self.timeout, env=self._env, check=False)
        except FileNotFoundError:
            raise Unavailable(f"the tesseract binary {self.binary!r} is not installed") from None
        except subprocess.TimeoutExpired:
            raise Unavailable(f"tesseract took longer than {self.timeout:g}s on one page") from None

    def _run(self, args: list[str], data: bytes | None = None) -> str:
        done = self._exec(args, data)
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")[-500:]
            log.warning("tesseract failed", extra={"tesseract_args": args[1:], "stderr": stderr})
            raise Unavailable("tesseract failed on this page")
        return done.stdout.decode("utf-8", errors="replace")

    async def unload(self) -> str:
        was, self._model, self._state = self._model, "", EngineState.IDLE
        return f"unloaded {was}" if was else "nothing was loaded"

    async def close(self) -> None:
        await self.unload()

    async def recognize(self, page: PageImage, options: RecognizeOptions) -> Recognition:
        return await self.pool.run(self.recognize_now, page, options)

    def recognize_now(self, page: PageImage, options: RecognizeOptions) -> Recognition:
        """Recognises one page on the calling thread (blocking)."""
        if options.languages:
            return self._explicit(page, options.languages)
        return self._detected(page, options.candidates or self.languages())

    def _read(self, image: Image.Image, packs: tuple[str, ...] | list[str], dpi: float | None) -> Reading:
        args = [self.binary, "stdin", "stdout", "-l", "+".join(packs), "--psm", "3"]
        if dpi:
            args += ["--dpi", str(round(dpi))]
        text, confidence, lines = parse_tsv(self._run([*args, "tsv"], encode(image)))
        return Reading(text, confidence, lines)

    def _orientation(self, image: Image.Image, dpi: float | None) -> Orientation | None:
        """OSD's verdict, or None when the pack is missing or the page has too little text for it."""
        if "osd" not in self._installed:
            return None
        args = [self.binary, "stdin", "stdout", "--psm", "0", "-l", "osd"]
        if dpi:
            args += ["--dpi", str(round(dpi))]
        done = self._exec(args, encode(image))
        return parse_osd(done.stdout.decode("utf-8", errors="replace")) if done.returncode == 0 else None

    def _explicit(self, page: PageImage, packs: tuple[str, ...]) -> Recognition:
        image = page.image
        reading = self._read(image, packs, page.dpi)
        if reading.doubtful:
            osd = self._orientation(image, page.dpi)
            if osd and osd.rotate and osd.orientation_confidence >= MIN_ORIENTATION_CONFIDENCE:
                turned = turn(image, osd.rotate)
                again = self._read(turned, packs, page.dpi)
                if again.confidence > reading.confidence:
                    image, reading = turned, again
        script = BY_TESSERACT[packs[0]].script if packs[0] in BY_TESSERACT else script_of_text(reading.text)
        return _recognition(reading, packs[0], script, image)

    def _detected(self, page: PageImage, allowed: frozenset[str]) -> Recognition:
        image = page.image
        osd = self._orientation(image, page.dpi)
        if osd and osd.rotate and osd.orientation_confidence >= MIN_ORIENTATION_CONFIDENCE:
            image = turn(image, osd.rotate)
        script = osd.script if osd else ""
        pack = first_pack(script, allowed) if script else None
        if script and pack is None:
            # No pack for the script OSD saw: the reading is a best effort and the language is unknown.
            reading = self._read(image, [first_pack("Latin", allowed) or min(allowed)], page.dpi)
            return _recognition(reading, "", script, image)
        if pack is None:
            # OSD could not tell (too little text, or no osd pack): most text in the wild is Latin.
            pack = first_pack("Latin", allowed) or min(allowed)
            script = BY_TESSERACT[pack].script if pack in BY_TESSERACT else ""
        reading = self._read(image, [pack], page.dpi)
        language = pack
        guess = self.identification.identify(reading.text, script)
        if guess and guess[1] >= MIN_LANGUAGE_PROBABILITY:
            language = guess[0].tesseract
            if language != pack and language in allowed:
                reading = self._read(image, [language], page.dpi)
        return _recognition(reading, language, script, image)


def _recognition(reading: Reading, language: str, script: str, image: Image.Image) -> Recognition:
    width, height = image.size
    return Recognition(reading.text, language, script, reading.confidence, width, height, reading.lines)
