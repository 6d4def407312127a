"""The textgen process's own typed settings: which backend it runs, its models and their upstream names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aigw_server.runtime.config import BackendConfig, ConfigError, GatewayConfig

ENGINES = ("transformers", "vllm", "openai")
PLACEHOLDER = re.compile(r"\{(model|served_name|host|port|capacity|max_model_len|gpu_memory_utilization)\}")
# Metrics are polled from servers that export Prometheus text; transformers serve has no /metrics.
METRICS_ENGINES = ("vllm", "openai")


@dataclass(frozen=True)
class ModelSpec:
    """One model as this backend serves it."""

    name: str
    source: str
    upstream_name: str
    default_max_tokens: int


@dataclass(frozen=True)
class TextgenSettings:
    """Everything one textgen process needs, resolved and validated once at start."""

    backend: BackendConfig
    models: Mapping[str, ModelSpec]
    known_models: frozenset[str]
    address: str
    metrics_port: int
    queue_address: str
    status_interval_seconds: float
    url: str
    api_key: str
    priority_scheduling: bool
    direct_grace_seconds: float = 0.0
    # Where routers call the attached engine (GetEngines); empty: at `url`, where textgen itself calls it.
    advertise_url: str = ""

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def supervised(self) -> bool:
        return self.backend.mode == "supervise"

    @property
    def sleep_capable(self) -> bool:
        return self.backend.engine == "vllm" and self.backend.sleep_mode

    @property
    def polls_metrics(self) -> bool:
        return self.backend.engine in METRICS_ENGINES

    @property
    def stream_usage(self) -> bool:
        """Whether streamed answers may ask for usage (transformers serve rejects stream_options)."""
        return self.backend.engine != "transformers"

    @property
    def generates_api_key(self) -> bool:
        """Supervised vLLM gets a fresh random API key at each start (VLLM_API_KEY, never argv)."""
        return self.supervised and self.backend.engine == "vllm"

    @property
    def health_path(self) -> str:
        # A generic OpenAI-compatible server need not have /health; /v1/models is part of the API.
        return "/v1/models" if self.backend.engine == "openai" else "/health"


def upstream_name(engine: str, name: str, source: str, served_name: str) -> str:
    """The `model` field the server expects: transformers serve pins the name it was started with."""
    if engine == "transformers":
        return source
    return served_name or name


def model_spec(cfg: GatewayConfig, backend: BackendConfig, name: str) -> ModelSpec:
    """How `backend` loads and names the gateway model `name`."""
    model = cfg.model(name)
    source = model.path or model.served_name or name
    return ModelSpec(name, source, upstream_name(backend.engine, name, source, model.served_name), model.default_max_tokens)


def select_backend(cfg: GatewayConfig, env: Mapping[str, str]) -> BackendConfig:
    """The backend named by AIGW_BACKEND, or the first textgen backend."""
    wanted = env.get("AIGW_BACKEND", "")
    if wanted:
        backend = cfg.backend(wanted)
        if backend.kind != "textgen":
            raise ConfigError(f"AIGW_BACKEND: {wanted!r} is an {backend.kind} backend, not textgen")
        return backend
    textgen = cfg.backends_of("textgen")
    if not textgen:
        raise ConfigError("backends: no textgen backend is configured")
    return textgen[0]


def _check(backend: BackendConfig) -> None:
    where = f"backends.{backend.name}"
    if backend.engine not in ENGINES:
        raise ConfigError(f"{where}.engine: {backend.engine!r} is not a text engine (use one of {', '.join(ENGINES)})")
    if backend.mode == "supervise" and backend.engine == "openai" and not backend.command:
        raise ConfigError(f"{where}.command: required to supervise an openai-engine server (there is no default command)")
    for arg in backend.command:
        for field in re.findall(r"\{([a-z_]+)\}", arg):
            if not PLACEHOLDER.fullmatch("{" + field + "}"):
                raise ConfigError(f"{where}.command: unknown placeholder {{{field}}} in {arg!r}")
    if backend.capacity < 1:
        raise ConfigError(f"{where}.capacity: must be >= 1")
    if backend.max_models < 1:
        raise ConfigError(f"{where}.max_models: must be >= 1")
    if not 0 < backend.gpu_memory_utilization <= 1:
        raise ConfigError(f"{where}.gpu_memory_utilization: must be in (0, 1]")


def _priority_scheduling(backend: BackendConfig) -> bool:
    """Whether vLLM runs `--scheduling-policy priority`: our default command does; an attached server
    does unless `priority_scheduling: false` says otherwise; a configured command says it itself."""
    if backend.engine != "vllm":
        return False
    if backend.mode == "attach":
        return backend.priority_scheduling
    if not backend.command:
        return True
    joined = " ".join(backend.command)
    return "--scheduling-policy=priority" in joined or "--scheduling-policy priority" in joined


def base_url(url: str) -> str:
    """The server's root URL: accepts it with or without a trailing /v1."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def attached_api_key(backend: BackendConfig, env: Mapping[str, str]) -> str:
    """The key of an attached server: the variable `api_key_env` names (the file never holds the secret),
    else AIGW_TEXTGEN_API_KEY; empty when the server takes none."""
    if not backend.api_key_env:
        return env.get("AIGW_TEXTGEN_API_KEY", "")
    key = env.get(backend.api_key_env, "")
    if not key:
        raise ConfigError(f"backends.{backend.name}.api_key_env: the environment variable {backend.api_key_env} is not set")
    return key


def resolve_settings(cfg: GatewayConfig, env: Mapping[str, str]) -> TextgenSettings:
    """Builds the settings of the backend this process runs."""
    backend = select_backend(cfg, env)
    _check(backend)
    chat_models = tuple(name for name, m in cfg.models.items() if m.kind == "chat")
    names = backend.models or chat_models
    url = base_url(backend.url) if backend.mode == "attach" else ""
    first_textgen = cfg.backends_of("textgen")[0].name == backend.name
    return TextgenSettings(
        backend=backend,
        models={name: model_spec(cfg, backend, name) for name in names},
        known_models=frozenset(chat_models),
        address=backend.address or cfg.services.textgen.address,
        # A backend's own metrics port; otherwise only the first textgen backend takes services.textgen's.
        metrics_port=backend.metrics_port or (cfg.services.textgen.metrics_port if first_textgen else 0),
        queue_address=cfg.services.queue.address,
        status_interval_seconds=cfg.routing.status_interval_seconds,
        url=url,
        advertise_url=base_url(backend.advertise_url) if backend.advertise_url else "",
        api_key=attached_api_key(backend, env) if backend.mode == "attach" else "",
        priority_scheduling=_priority_scheduling(backend),
        # Routers that call engines directly need one status interval to see a drain begin.
        direct_grace_seconds=cfg.routing.status_interval_seconds if cfg.routing.direct_engines else 0.0,
    )
