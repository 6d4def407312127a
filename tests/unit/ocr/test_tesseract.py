"""The Tesseract engine with the real binary: fonts and sizes, layout, scripts and languages, rotation, its lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from PIL import Image

from aigw_server.ocr.languages import LanguageIdentification
from aigw_server.ocr.ocr_engine import EngineState
from aigw_server.ocr.resolution import Mode
from aigw_server.ocr.results import OutputFormat, PageImage, Recognition, RecognizeOptions
from aigw_server.ocr.tesseract import TesseractEngine, parse_osd, parse_tsv
from aigw_server.ocr.workers import WorkerPool
from aigw_server.runtime.config import BackendConfig, ModelConfig
from aigw_server.runtime.errors import FailedPrecondition, Unavailable
from tests.unit.ocr import samples

PACKS = frozenset({"eng", "deu", "fra", "rus", "ell"})
BACKEND = BackendConfig(name="tesseract-test", kind="ocr", engine="tesseract", languages=("eng",))
MODEL = ModelConfig(kind="ocr", languages=tuple(sorted(PACKS)))
MAX_CER = 0.05


@pytest.fixture
async def engine() -> AsyncIterator[TesseractEngine]:
    pool = WorkerPool(2)
    engine = TesseractEngine(BACKEND, pool, LanguageIdentification())
    await engine.load("tesseract", MODEL)
    yield engine
    await engine.close()
    pool.close()


def read(
    engine: TesseractEngine, image: Image.Image, languages: tuple[str, ...] = (), candidates: frozenset[str] = PACKS
) -> Recognition:
    options = RecognizeOptions(Mode.BASE, languages, OutputFormat.TEXT, True, candidates)
    return engine.recognize_now(PageImage(1, image), options)


@pytest.mark.parametrize(
    ("face", "size"),
    [("sans", 28), ("serif", 22), ("mono", 18), ("condensed-bold", 34), ("serif-italic", 26), ("sans", 14)],
)
def test_printed_text_in_several_fonts_and_sizes(engine: TesseractEngine, face: str, size: int) -> None:
    found = read(engine, samples.text_image(samples.ENGLISH, face, size), ("eng",))
    assert samples.cer("\n".join(samples.ENGLISH), found.text) <= MAX_CER
    assert (found.language, found.script) == ("eng", "Latin")


def test_lines_and_words_with_boxes_and_confidences(engine: TesseractEngine) -> None:
    image = samples.text_image(samples.ENGLISH)
    found = read(engine, image, ("eng",))
    assert [line.text for line in found.lines] == samples.ENGLISH
    tops = [line.box.y for line in found.lines]
    assert tops == sorted(tops)
    for line in found.lines:
        assert " ".join(w.text for w in line.words) == line.text
        for word in line.words:
            assert 50 <= word.confidence <= 100
            assert word.box.x >= 0
            assert word.box.x + word.box.width <= image.width
            assert line.box.y <= word.box.y <= line.box.y + line.box.height
    assert found.confidence > 80
    assert (found.width, found.height) == image.size


@pytest.mark.parametrize(
    ("lines", "language", "script"),
    [
        (samples.ENGLISH, "eng", "Latin"),
        (samples.GERMAN, "deu", "Latin"),
        (samples.FRENCH, "fra", "Latin"),
        (samples.RUSSIAN, "rus", "Cyrillic"),
        (samples.GREEK, "ell", "Greek"),
    ],
)
def test_language_and_script_are_detected(engine: TesseractEngine, lines: list[str], language: str, script: str) -> None:
    found = read(engine, samples.text_image(lines))
    assert (found.language, found.script) == (language, script)
    assert samples.cer("\n".join(lines), found.text) <= MAX_CER


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_turned_scans_are_turned_back_before_reading(engine: TesseractEngine, degrees: int) -> None:
    upright = samples.text_image(samples.ENGLISH)
    found = read(engine, upright.rotate(degrees, expand=True))
    assert samples.cer("\n".join(samples.ENGLISH), found.text) <= MAX_CER
    assert (found.width, found.height) == upright.size


def test_turned_scan_with_explicit_languages(engine: TesseractEngine) -> None:
    found = read(engine, samples.text_image(samples.GERMAN).rotate(90, expand=True), ("deu",))
    assert samples.cer("\n".join(samples.GERMAN), found.text) <= MAX_CER


def test_text_too_short_for_osd_is_still_read(engine: TesseractEngine) -> None:
    found = read(engine, samples.text_image(["Total: 42"], size=40, width=500))
    assert found.text == "Total: 42"
    assert found.script == "Latin"


def test_script_without_an_installed_pack_reports_the_script_only(engine: TesseractEngine) -> None:
    found = read(engine, samples.text_image(samples.RUSSIAN), candidates=frozenset({"eng"}))
    assert (found.language, found.script) == ("", "Cyrillic")


def test_osd_and_tsv_parsing() -> None:
    osd = parse_osd("Page number: 0\nOrientation in degrees: 270\nRotate: 90\nOrientation confidence: 10.83\nScript: Fraktur\n")
    assert osd is None
    osd = parse_osd("Rotate: 90\nOrientation confidence: 10.8\nScript: Fraktur\nScript confidence: 8.5\n")
    assert osd is not None
    assert (osd.rotate, osd.script) == (90, "Latin")
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
    rows = [
        "5\t1\t1\t1\t1\t1\t10\t10\t40\t20\t90\tHello",
        "5\t1\t1\t1\t1\t2\t60\t12\t50\t18\t80\tworld",
        "4\t1\t1\t1\t2\t0\t10\t40\t30\t20\t-1\t",
        "5\t1\t1\t1\t2\t1\t10\t40\t30\t20\t70\tagain",
        "5\t1\t2\t1\t1\t1\t10\t90\t30\t20\t60\tnext",
    ]
    text, confidence, lines = parse_tsv(header + "\n".join(rows))
    assert text == "Hello world\nagain\n\nnext"
    assert confidence == pytest.approx(75)
    assert (lines[0].box.x, lines[0].box.y, lines[0].box.width, lines[0].box.height) == (10, 10, 100, 20)


async def test_missing_language_packs_fail_the_load() -> None:
    pool = WorkerPool(1)
    engine = TesseractEngine(BACKEND, pool, LanguageIdentification())
    with pytest.raises(FailedPrecondition) as caught:
        await engine.load("tesseract", ModelConfig(kind="ocr", languages=("eng", "xyz")))
    assert "missing language packs: xyz; installed: " in caught.value.message
    assert "eng" in caught.value.message
    assert engine.health().state is EngineState.IDLE
    pool.close()


async def test_missing_binary_fails_the_load() -> None:
    pool = WorkerPool(1)
    engine = TesseractEngine(
        BackendConfig(name="t", kind="ocr", command=("/nonexistent/tesseract",)), pool, LanguageIdentification()
    )
    with pytest.raises(Unavailable, match="not installed"):
        await engine.load("tesseract", MODEL)
    assert engine.health().state is EngineState.IDLE
    pool.close()


async def test_unload_and_reload(engine: TesseractEngine) -> None:
    assert engine.health().state is EngineState.READY
    assert await engine.unload() == "unloaded tesseract"
    assert (engine.health().state, engine.health().model) == (EngineState.IDLE, "")
    assert "ready with deu, ell, eng, fra, rus" in await engine.load("tesseract", MODEL)
