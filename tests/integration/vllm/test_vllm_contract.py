"""Every vLLM command line the project generates or ships, parsed by vLLM's own argument parser, and every
request body it sends, validated by vLLM's own request models (the real package, vLLM's CPU build)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw.common.v1 import common_pb2
from aigw_server.engines.payloads import VLLM_PRIORITY, chat_body
from aigw_server.ocr import deepseek
from aigw_server.ocr.results import OutputFormat
from aigw_server.runtime.config import BackendConfig, ModelConfig, parse_config
from aigw_server.textgen.commands import server_command
from aigw_server.textgen.settings import TextgenSettings, resolve_settings
from tests.integration.vllm.helpers import REPO, VllmChecker
from tests.unit.deploy.helpers import compose_services, containers, workloads

pytestmark = pytest.mark.timeout(900)


def textgen(**backend: Any) -> TextgenSettings:
    raw = {
        "models": {"llama": {"path": "/models/llama-3-8b", "served_name": "meta-llama/Llama-3-8B-Instruct"}},
        "backends": [{"name": "gpu-0", "kind": "textgen", "engine": "vllm", "port": 8200, "models": ["llama"], **backend}],
    }
    return resolve_settings(parse_config(raw, env={}), {})


TEXTGEN_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "sleep mode, context length, capacity": {"sleep_mode": True, "max_model_len": 8192, "capacity": 48},
    "the CPU build's interpreter": {"engine_python": "/opt/vllm-cpu/bin/python", "gpu_memory_utilization": 0.08},
    "two models sharing the GPU": {"max_models": 2, "gpu_memory_utilization": 0.45},
}


@pytest.mark.parametrize("variant", sorted(TEXTGEN_VARIANTS))
def test_textgens_vllm_command_lines_mean_what_textgen_intends(vllm_checker: VllmChecker, variant: str) -> None:
    s = textgen(**TEXTGEN_VARIANTS[variant])
    spec = s.models["llama"]

    answer = vllm_checker.ask({"argv": server_command(s.backend, spec, 8201)})

    assert answer["ok"], answer.get("error")
    args = answer["args"]
    assert (args.get("model_tag") or args["model"]) == "/models/llama-3-8b"
    assert (args["host"], args["port"]) == ("127.0.0.1", 8201)
    assert args["served_model_name"] == [spec.upstream_name]
    assert args["max_num_seqs"] == s.backend.capacity
    assert args["gpu_memory_utilization"] == pytest.approx(s.backend.gpu_memory_utilization)
    assert args["scheduling_policy"] == "priority"
    assert s.priority_scheduling, "textgen sends priorities exactly when the server runs this policy"
    assert bool(args["enable_sleep_mode"]) == s.backend.sleep_mode
    assert args["max_model_len"] == (s.backend.max_model_len or None)


def test_a_misspelt_flag_is_refused_by_the_checker(vllm_checker: VllmChecker) -> None:
    """The parser really parses: an option vLLM does not have fails."""
    answer = vllm_checker.ask({"argv": ["vllm", "serve", "m", "--scheduling-polcy", "priority"]})

    assert not answer["ok"]
    assert "--scheduling-polcy" in answer["error"]


def test_the_deepseek_ocr_command_line_follows_the_recipe(vllm_checker: VllmChecker) -> None:
    backend = BackendConfig(name="ocr-gpu-0", kind="ocr", engine="deepseek-ocr", port=8300, gpu_memory_utilization=0.3)
    model = ModelConfig(kind="ocr", path="deepseek-ai/DeepSeek-OCR", served_name="deepseek-ocr")

    answer = vllm_checker.ask({"argv": deepseek.server_command(backend, "deepseek-ocr", model)})

    assert answer["ok"], answer.get("error")
    args = answer["args"]
    assert (args["model_tag"], args["served_model_name"], args["port"]) == ("deepseek-ai/DeepSeek-OCR", ["deepseek-ocr"], 8300)
    assert args["logits_processors"] == [deepseek.LOGITS_PROCESSOR]
    assert args["enable_prefix_caching"] is False
    assert args["mm_processor_cache_gb"] == 0


def _with_defaults(argv: list[Any]) -> list[str]:
    """A compose command with each ${VAR:-default} replaced by its default."""
    return [re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(a)) for a in argv]


def _shipped_servers() -> dict[str, list[str]]:
    servers: dict[str, list[str]] = {}
    for name, service in compose_services().items():
        if str(service.get("image", "")).startswith("vllm/"):
            servers[f"compose {name}"] = _with_defaults([*service["entrypoint"], *service["command"]])
    for workload in workloads():
        for c in containers(workload):
            if c["image"].startswith("vllm/"):
                servers[f"k8s {workload['metadata']['name']}/{c['name']}"] = [*c["command"], *c["args"]]
    return servers


SHIPPED = _shipped_servers()


@pytest.mark.parametrize("where", sorted(SHIPPED))
def test_the_shipped_vllm_servers_parse_and_listen_where_they_are_reached(vllm_checker: VllmChecker, where: str) -> None:
    answer = vllm_checker.ask({"argv": SHIPPED[where]})

    assert answer["ok"], answer.get("error")
    assert answer["args"]["host"] == "0.0.0.0", "probes, scrapes and textgen reach it from outside its own loopback"
    assert answer["args"]["port"] == 8000


def test_the_shipped_images_are_the_release_these_tests_run(vllm_checker: VllmChecker) -> None:
    compose = (REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    k8s = " ".join(p.read_text(encoding="utf-8") for p in (REPO / "deploy" / "k8s").glob("*.yaml"))
    tags = set(re.findall(r"vllm/vllm-openai:(?:\$\{VLLM_TAG:-)?(v[0-9.]+)", compose + k8s))

    assert tags == {f"v{vllm_checker.version}"}


def _chat(**params: Any) -> common_pb2.ChatJob:
    return common_pb2.ChatJob(
        messages=[
            common_pb2.ChatMessage(role="system", content="Be brief."),
            common_pb2.ChatMessage(role="user", content="Hi", name="ann"),
            common_pb2.ChatMessage(role="assistant", content="Hello."),
            common_pb2.ChatMessage(role="user", content="And now?"),
        ],
        params=common_pb2.GenerationParams(**params),
    )


FULL_PARAMS = {
    "max_tokens": 7,
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 42,
    "stop": ["\n\n"],
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
}


@pytest.mark.parametrize(
    ("priority", "stream", "stream_usage"),
    list(itertools.product(sorted(common_pb2.Priority.values()), (False, True), (True, False))),
)
def test_textgens_chat_bodies_are_what_vllm_reads(
    vllm_checker: VllmChecker, priority: int, stream: bool, stream_usage: bool
) -> None:
    spec = textgen().models["llama"]
    body = chat_body(
        spec, _chat(**FULL_PARAMS), stream=stream, priority=priority, priority_scheduling=True, stream_usage=stream_usage
    )

    answer = vllm_checker.ask({"chat": orjson.loads(orjson.dumps(body))})

    assert answer["ok"], answer.get("error")
    assert answer["ignored"] == [], "every field sent is one vLLM reads"
    assert answer["priority"] == VLLM_PRIORITY.get(priority, 0)
    assert (answer["stream"], answer["include_usage"]) == (stream, stream and stream_usage)
    sampling = answer["sampling"]
    assert (sampling["max_tokens"], sampling["seed"], sampling["stop"]) == (7, 42, ["\n\n"])
    assert (sampling["temperature"], sampling["top_p"]) == pytest.approx((0.5, 0.9))


def test_a_body_with_only_the_defaults_is_valid(vllm_checker: VllmChecker) -> None:
    body = chat_body(textgen().models["llama"], _chat(), stream=False)

    answer = vllm_checker.ask({"chat": body})

    assert answer["ok"], answer.get("error")
    assert answer["ignored"] == []
    assert answer["priority"] == 0


@pytest.mark.parametrize("output_format", [OutputFormat.TEXT, OutputFormat.MARKDOWN])
def test_deepseek_ocr_page_requests_are_what_vllm_reads(vllm_checker: VllmChecker, output_format: OutputFormat) -> None:
    body = deepseek.chat_request("deepseek-ocr", "data:image/png;base64,iVBORw0KGgo=", output_format)

    answer = vllm_checker.ask({"chat": body})

    assert answer["ok"], answer.get("error")
    assert answer["ignored"] == [], "skip_special_tokens and vllm_xargs are vLLM request fields"
    assert answer["sampling"]["temperature"] == 0.0


def _documented_token_table() -> list[tuple[int, int, list[int], int]]:
    text = (REPO / "docs" / "ocr.md").read_text(encoding="utf-8")
    table = text.split("<!-- deepseek-ocr-tokens -->")[1].split("<!-- /deepseek-ocr-tokens -->")[0]
    times = "\N{MULTIPLICATION SIGN}"
    rows = []
    for line in table.strip().splitlines()[2:]:
        size, _, crops, tokens = (cell.strip() for cell in line.strip("|").split("|"))
        width, height = (int(v) for v in size.split(times))
        grid = [0, 0] if crops == "none" else [int(v) for v in crops.split(times)]
        rows.append((width, height, grid, int(tokens)))
    return rows


def test_the_documented_deepseek_ocr_token_costs_are_vllms(vllm_checker: VllmChecker) -> None:
    rows = _documented_token_table()
    assert len(rows) >= 5

    for width, height, crops, tokens in rows:
        answer = vllm_checker.ask({"deepseek_ocr_tokens": [width, height]})
        assert (answer["crops"], answer["tokens"]) == (crops, tokens), f"{width}x{height}"
        assert (answer["base_size"], answer["image_size"], answer["crop_mode"]) == (1024, 640, True)


def test_the_documented_modes_match_what_the_service_sends(vllm_checker: VllmChecker) -> None:
    from aigw_server.ocr.resolution import VLLM_DEEPSEEK_VIEW, Mode, deepseek_render

    assert (VLLM_DEEPSEEK_VIEW.base_size, VLLM_DEEPSEEK_VIEW.image_size) == (1024, 640)
    for mode in Mode:
        side = deepseek_render(mode).max_long_side
        answer = vllm_checker.ask({"deepseek_ocr_tokens": [side, side]})
        expected = 273 if mode in (Mode.TINY, Mode.SMALL) else 693
        assert answer["tokens"] == expected, mode


def test_the_tiny_model_has_a_head_dim_vllms_cpu_kernels_run(tiny_model_dir: Path) -> None:
    """The model both engines serve in the suite holds the shape vLLM's CPU kernels accept."""
    config = orjson.loads((tiny_model_dir / "config.json").read_bytes())

    assert config["n_embd"] // config["n_head"] == 64
