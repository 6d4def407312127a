"""Checks command lines and request bodies with vLLM's own parser and request models (run it under .venv-vllm).

One process answers many questions, because importing vLLM takes seconds: each stdin line is a
JSON object, each answer one JSON line on stdout.

    {"argv": ["vllm", "serve", "m", "--port", "8000"]}   vLLM's `serve` argument parser
    {"argv": ["python", "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", "m"]}
    {"chat": {...}}                                      vLLM's ChatCompletionRequest model
    {"deepseek_ocr_tokens": [width, height]}             vision tokens vLLM's DeepSeek-OCR spends on an image

An answer is {"ok": true, ...facts} or {"ok": false, "error": "..."}. For argv the facts are the
parsed values of the options named in "fields" (default: all, as strings); for chat, the fields
vLLM ignores ("ignored") and the sampling parameters it derives ("sampling").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from typing import Any

SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"


def _parsers() -> tuple[Any, Any]:
    """The `vllm serve` parser (as the CLI builds it) and the server module's parser."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli = FlexibleArgumentParser(prog="vllm")
    subparsers = cli.add_subparsers(required=False, dest="subparser")
    ServeSubcommand().subparser_init(subparsers)
    module = make_arg_parser(FlexibleArgumentParser(prog=SERVER_MODULE))
    return cli, module


def check_argv(argv: list[str], parsers: tuple[Any, Any]) -> dict[str, Any]:
    """Parses a `vllm serve …` or `python -m <server module> …` command line the way vLLM would."""
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    cli, module = parsers
    if len(argv) >= 2 and argv[0].rsplit("/", 1)[-1] == "vllm" and argv[1] == "serve":
        parser, rest = cli, argv[1:]
    elif len(argv) >= 3 and argv[1:3] == ["-m", SERVER_MODULE]:
        parser, rest = module, argv[3:]
    else:
        return {"ok": False, "error": f"not a vLLM server command: {argv[:3]}"}
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(rest)
        if getattr(args, "model_tag", None):
            args.model = args.model_tag
        # What vLLM checks before it loads anything (building the engine config would fetch the model).
        validate_parsed_serve_args(args)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        return {"ok": False, "error": lines[-1] if lines else "argument error"}
    except (TypeError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "args": {k: _plain(v) for k, v in vars(args).items() if not callable(v)}}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def check_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Validates a /v1/chat/completions body with vLLM's request model and derives its sampling parameters."""
    import pydantic
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    try:
        request = ChatCompletionRequest.model_validate(body)
        sampling = request.to_sampling_params(max_tokens=body.get("max_tokens") or 16, default_sampling_params={})
    except (pydantic.ValidationError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    known = set()
    for name, field in ChatCompletionRequest.model_fields.items():
        known.add(name)
        if field.alias:
            known.add(field.alias)
    return {
        "ok": True,
        "ignored": sorted(set(body) - known),
        "priority": request.priority,
        "stream": request.stream,
        "include_usage": bool(request.stream_options and request.stream_options.include_usage),
        "sampling": {
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stop": list(sampling.stop or []),
        },
    }


def deepseek_ocr_tokens(width: int, height: int) -> dict[str, Any]:
    """Vision tokens of one image, by vLLM's DeepSeek-OCR processing code (its fixed 1024 global view and 640 crops)."""
    from vllm.model_executor.models import deepseek_ocr
    from vllm.transformers_utils.processors.deepseek_ocr import count_tiles

    # get_num_image_tokens reads nothing from its instance: the sizes are the module's constants.
    tokens = deepseek_ocr.DeepseekOCRProcessingInfo.get_num_image_tokens(
        None, image_width=width, image_height=height, cropping=deepseek_ocr.CROP_MODE
    )
    tiled = width > deepseek_ocr.IMAGE_SIZE or height > deepseek_ocr.IMAGE_SIZE
    columns, rows = count_tiles(width, height, image_size=deepseek_ocr.IMAGE_SIZE) if tiled else (1, 1)
    return {
        "ok": True,
        "tokens": tokens,
        "crops": [columns, rows] if tiled else [0, 0],
        "base_size": deepseek_ocr.BASE_SIZE,
        "image_size": deepseek_ocr.IMAGE_SIZE,
        "crop_mode": deepseek_ocr.CROP_MODE,
    }


def answer(question: dict[str, Any], parsers: tuple[Any, Any]) -> dict[str, Any]:
    if "argv" in question:
        return check_argv([str(a) for a in question["argv"]], parsers)
    if "chat" in question:
        return check_chat(question["chat"])
    if "deepseek_ocr_tokens" in question:
        width, height = question["deepseek_ocr_tokens"]
        return deepseek_ocr_tokens(int(width), int(height))
    return {"ok": False, "error": f"unknown question: {sorted(question)}"}


def main() -> int:
    logging.disable(logging.WARNING)
    parsers = _parsers()
    print(json.dumps({"ready": True, "vllm": __import__("vllm").__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = answer(json.loads(line), parsers)
        except Exception as exc:  # noqa: BLE001 - one bad question must not end the session
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    sys.exit(main())
