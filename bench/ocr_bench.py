"""OCR benchmark: pages per second through the ocr service (text layer, Tesseract) and its overhead over Tesseract alone.

Run: `python -m bench.ocr_bench [--pages 8] [--repeats 3] [--out docs/bench/ocr.json]`. It starts the ocr service in
process on 127.0.0.1 with a real gRPC client, and compares it with the same `tesseract` command line run directly on
the same pre-rendered pages with the same parallelism (one tesseract per core, OMP_THREAD_LIMIT=1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import grpc
import pymupdf
from PIL import Image, ImageDraw, ImageFont

from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from aigw_server.ocr.resolution import TESSERACT_RENDER, Mode
from aigw_server.ocr.service import build
from aigw_server.runtime.config import parse_config
from aigw_server.runtime.server import create_server
from bench.report import emit

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
VOCABULARY = (
    "the gateway queue model request backend document page text invoice total amount payment service engine report "
    "annual revenue growth customer order delivery account balance contract period value market"
)
WORDS = VOCABULARY.split()
PAGE_POINTS = (595, 842)
DPI = TESSERACT_RENDER[Mode.BASE].dpi
mupdf: Any = pymupdf  # Any: PyMuPDF ships no type hints for Document, Rect, Matrix (untyped calls)


def page_lines(seed: int, count: int = 32) -> list[str]:
    """Deterministic prose-like lines, different for every page."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(9)).capitalize() + "." for _ in range(count)]


def page_image(lines: list[str]) -> Image.Image:
    """A scanned A4 page at the base mode's DPI: 11 pt serif text."""
    scale = DPI / 72
    image = Image.new("L", (round(PAGE_POINTS[0] * scale), round(PAGE_POINTS[1] * scale)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, round(11 * scale))
    for i, line in enumerate(lines):
        draw.text((round(60 * scale), round((60 + i * 22) * scale)), line, font=font, fill=0)
    return image


def scanned_pdf(images: list[Image.Image]) -> bytes:
    """Image-only pages, each a JPEG as scanners produce them."""
    doc = mupdf.open()
    for image in images:
        page = doc.new_page(width=PAGE_POINTS[0], height=PAGE_POINTS[1])
        out = BytesIO()
        image.save(out, format="JPEG", quality=80)
        page.insert_image(page.rect, stream=out.getvalue())
    data: bytes = doc.tobytes()
    return data


def text_pdf(pages: list[list[str]]) -> bytes:
    doc = mupdf.open()
    for lines in pages:
        page = doc.new_page(width=PAGE_POINTS[0], height=PAGE_POINTS[1])
        page.insert_textbox(mupdf.Rect(60, 50, 540, 800), "\n".join(lines), fontsize=11, fontname="tiro")
    data: bytes = doc.tobytes()
    return data


def rendered_pages(pdf: bytes) -> list[bytes]:
    """Each page as the service renders it for Tesseract (gray, base DPI), encoded as PGM like the service sends it."""
    out = []
    for page in mupdf.open(stream=pdf, filetype="pdf"):
        pix = page.get_pixmap(matrix=mupdf.Matrix(DPI / 72, DPI / 72), colorspace=mupdf.csGRAY, alpha=False)
        buffer = BytesIO()
        Image.frombytes("L", (pix.width, pix.height), pix.samples).save(buffer, format="PPM")
        out.append(buffer.getvalue())
    return out


@dataclass(frozen=True)
class Sample:
    """One run: wall-clock seconds, and CPU seconds of this process and its (tesseract) children."""

    wall: float
    cpu: float


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def tesseract_direct(pages: list[bytes], workers: int, env: dict[str, str]) -> Sample:
    """`tesseract` reading every page, `workers` at a time."""
    args = ["tesseract", "stdin", "stdout", "-l", "eng", "--psm", "3", "--dpi", str(round(DPI)), "tsv"]

    def one(data: bytes) -> None:
        subprocess.run(args, input=data, capture_output=True, check=True, env=env)

    started, cpu = time.perf_counter(), cpu_seconds()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, pages))
    return Sample(time.perf_counter() - started, cpu_seconds() - cpu)


def pymupdf_direct(pdf: bytes) -> Sample:
    started, cpu = time.perf_counter(), cpu_seconds()
    doc = mupdf.open(stream=pdf, filetype="pdf")
    for page in doc:
        page.get_text("text")
    return Sample(time.perf_counter() - started, cpu_seconds() - cpu)


async def timed(call: Callable[[], Awaitable[object]]) -> Sample:
    started, cpu = time.perf_counter(), cpu_seconds()
    await call()
    return Sample(time.perf_counter() - started, cpu_seconds() - cpu)


def median_rate(pages: int, samples: list[Sample]) -> dict[str, float]:
    wall = statistics.median(s.wall for s in samples)
    cpu = statistics.median(s.cpu for s in samples)
    return {"seconds": round(wall, 3), "pages_per_second": round(pages / wall, 2), "cpu_seconds": round(cpu, 3)}


def overhead(through: list[Sample], direct: list[Sample]) -> dict[str, float]:
    """The service's extra time over the direct runs, in percent, by wall clock and by CPU time."""
    wall = statistics.median(s.wall for s in through) / statistics.median(s.wall for s in direct) - 1
    cpu = statistics.median(s.cpu for s in through) / statistics.median(s.cpu for s in direct) - 1
    return {"wall_pct": round(wall * 100, 1), "cpu_pct": round(cpu * 100, 1)}


async def measure(pages: int, repeats: int, workers: int) -> dict[str, Any]:
    cfg = parse_config(
        {
            "models": {"tesseract": {"kind": "ocr", "default_resolution": "base", "languages": ["eng", "deu", "fra"]}},
            "backends": [
                {"name": "bench-ocr", "kind": "ocr", "engine": "tesseract", "models": ["tesseract"], "workers": workers}
            ],
        },
        env={},
    )
    service = build(cfg)
    server, port, health = await create_server(service, "127.0.0.1:0")
    await server.start()
    await service.start(health)
    await service.wait_loaded()
    texts = [page_lines(n) for n in range(pages)]
    scanned = scanned_pdf([page_image(lines) for lines in texts])
    layered = text_pdf([page_lines(n) for n in range(pages * 25)])
    rendered = rendered_pages(scanned)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    results: dict[str, list[Sample]] = {k: [] for k in ("direct", "service", "auto", "direct_default", "layer", "layer_direct")}
    load = os.getloadavg()[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)

        def recognize(document: bytes, languages: list[str]) -> Callable[[], Awaitable[object]]:
            job = common_pb2.OcrJob(document=document, languages=languages, resolution=common_pb2.RESOLUTION_BASE)
            return lambda: stub.Recognize(ocr_pb2.RecognizeRequest(job=job), timeout=3600)

        await recognize(layered, [])()
        for _ in range(repeats):
            results["direct"].append(await asyncio.to_thread(tesseract_direct, rendered, workers, env))
            results["service"].append(await timed(recognize(scanned, ["eng"])))
            results["auto"].append(await timed(recognize(scanned, [])))
            results["layer"].append(await timed(recognize(layered, [])))
            results["layer_direct"].append(await asyncio.to_thread(pymupdf_direct, layered))
        results["direct_default"].append(await asyncio.to_thread(tesseract_direct, rendered, 1, dict(os.environ)))
    await server.stop(None)
    await service.stop()
    extra = overhead(results["service"], results["direct"])
    machine = {"cpus": os.cpu_count(), "load_before": load, "load_after": os.getloadavg()[0]}
    return {
        "machine": machine,
        "run": {"workers": workers, "pages": pages, "repeats": repeats, "dpi": DPI},
        "tesseract_direct_parallel": median_rate(pages, results["direct"]),
        "tesseract_direct_one_at_a_time_default_threads": median_rate(pages, results["direct_default"]),
        "service_tesseract_explicit_eng": median_rate(pages, results["service"]),
        "service_tesseract_auto_language": median_rate(pages, results["auto"]),
        "service_overhead": extra,
        "service_text_layer": median_rate(pages * 25, results["layer"]),
        "pymupdf_text_direct": median_rate(pages * 25, results["layer_direct"]),
        "target_overhead_le_10pct": {"wall": extra["wall_pct"] <= 10, "cpu": extra["cpu_pct"] <= 10},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.ocr_bench", description=__doc__)
    parser.add_argument("--pages", type=int, default=8, help="scanned pages per run (text-layer runs use 25x as many)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind; the median is reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="", help="also write the JSON report here")
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.pages, args.repeats, args.workers))
    emit(report, args.out)


if __name__ == "__main__":
    main()
