"""How each benchmark script hands over its report: JSON on standard output, and in a file when asked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def emit(report: Mapping[str, Any], out: str = "") -> None:
    """Prints `report` as indented JSON and, with `out`, writes the same text there (making its folder)."""
    text = json.dumps(report, indent=2) + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    print(text, end="")
