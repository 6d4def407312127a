"""Typed gateway configuration: YAML file + ${VAR:-default} expansion + AIGW_* overrides, validated once."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

DEFAULT_CONFIG_PATH = "config/config.yaml"
# A default may hold a `{placeholder}` of its own (a replicated backend's `{index}`).
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[a-z_]+\})*))?\}")
INDEX = "{index}"
URL_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")

ServiceName = Literal["router", "queue", "textgen", "ocr", "admin", "edge"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("router", "queue", "textgen", "ocr", "admin", "edge")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class Endpoint:
    """Where one service listens: gRPC (or HTTP for the edge) and its Prometheus side port."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    # router and admin only: the mTLS port the edge (or Envoy) calls; `port` is their public one.
    mesh_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def mesh_address(self) -> str:
        """Where other services of the mesh call this one: the mTLS port when it has its own."""
        return f"{self.host}:{self.mesh_port or self.port}"


JSON_UPLOAD_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """The public REST edge."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Room for the largest document as base64 in JSON (4/3 of 10 MiB is 13.3 MiB) plus the other fields.
    max_body_bytes: int = 14 * 1024 * 1024
    metrics_port: int = 9100
    # Addresses or CIDRs of reverse proxies in front of the edge whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServicesConfig:
    """Addresses of every gRPC service of the mesh."""

    router: Endpoint = Endpoint(port=50051, metrics_port=9101, mesh_port=50061)
    queue: Endpoint = Endpoint(port=50052, metrics_port=9102)
    textgen: Endpoint = Endpoint(port=50053, metrics_port=9103)
    ocr: Endpoint = Endpoint(port=50054, metrics_port=9104)
    admin: Endpoint = Endpoint(port=50055, metrics_port=9105, mesh_port=50065)
    grace_seconds: float = 10.0


@dataclass(frozen=True)
class DatabaseConfig:
    """MongoDB (MONGODB_URI) or, when no URI is given, the embedded FerretDB."""

    uri: str = ""
    name: str = "aigw"

    @property
    def embedded(self) -> bool:
        return not self.uri


@dataclass(frozen=True)
class MeshTlsConfig:
    """Service identity: mutual TLS between the services, each with its own certificate."""

    # mtls: every internal call presents and verifies a certificate of the mesh CA.
    # plaintext: no service identity at all; refused unless every service listens on loopback (tests).
    mode: Literal["mtls", "plaintext"] = "mtls"
    # ca.crt plus <identity>.crt and <identity>.key; empty: <data_dir>/pki, which the launcher fills.
    dir: str = ""


@dataclass(frozen=True)
class QueueConfig:
    """Queue defaults; per-model values in `models` and the dynamic config override them."""

    max_waiting: int = 10
    timeout: float = 300.0
    max_attempts: int = 3
    lease_ttl_seconds: float = 10.0
    history_retention_days: int = 15
    ageing_seconds: float = 30.0
    orphan_grace_seconds: float = 3.0
    sweep_interval_seconds: float = 1.0


@dataclass(frozen=True)
class JwtKey:
    """A public key accepted for RS256/ES256 tokens."""

    kid: str = ""
    algorithm: str = "RS256"
    pem_file: str = ""


@dataclass(frozen=True)
class AuthConfig:
    """Token verification and issuance."""

    jwt_secret: str = ""
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str = "aigw"
    audience: str = "aigw"
    leeway_seconds: float = 30.0
    max_iat_skew_seconds: float = 300.0
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 14 * 24 * 3600
    public_keys: tuple[JwtKey, ...] = ()
    jwks_file: str = ""
    signing_key_file: str = ""
    admin_username: str = "admin"
    admin_password: str = ""
    login_attempts_per_minute: int = 10


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: sustained rate and burst."""

    requests_per_minute: float = 60.0
    burst: int = 10


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-client token buckets with per-client and per-role overrides."""

    default: RateLimit = RateLimit()
    clients: dict[str, RateLimit] = field(default_factory=dict)
    roles: dict[str, RateLimit] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingConfig:
    """Backend choice."""

    policy: Literal["least_loaded", "prefix_affinity", "round_robin"] = "least_loaded"
    status_interval_seconds: float = 1.0
    saturation_threshold: float = 1.0
    kv_cache_threshold: float = 0.95
    down_retry_seconds: float = 5.0
    workers: int = 4
    # Job calls to the queue share one long-lived Session stream per router; false: one unary call each.
    queue_session: bool = True
    # Chats go from the router straight to HTTP engines (textgen stays their control plane); false: through textgen.
    direct_engines: bool = True


@dataclass(frozen=True)
class AutoSwitchConfig:
    """Pattern-based model switching."""

    enabled: bool = False
    pattern_window_days: int = 7
    cooldown_seconds: float = 300.0
    interval_seconds: float = 30.0
    demand_margin: float = 2.0


@dataclass(frozen=True)
class ModelConfig:
    """One model the gateway serves."""

    kind: Literal["chat", "ocr"] = "chat"
    enabled: bool = True
    max_concurrent: int = 10
    max_waiting: int | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    path: str = ""
    served_name: str = ""
    default_max_tokens: int = 256
    default_resolution: str = "base"
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendConfig:
    """One textgen or OCR backend: the service's address and the model server it supervises or attaches to."""

    name: str = ""
    kind: Literal["textgen", "ocr"] = "textgen"
    address: str = ""
    # N > 0: the entry stands for the N pods of a StatefulSet, backends `<name>-0` … `<name>-<N-1>`,
    # each at `address` with `{index}` replaced by its ordinal (docs/deployment.md).
    replicas: int = 0
    metrics_port: int = 0
    engine: Literal["transformers", "vllm", "openai", "tesseract", "deepseek-ocr"] = "transformers"
    mode: Literal["supervise", "attach"] = "supervise"
    url: str = ""
    # Where routers reach an attached engine (GetEngines), when not at `url`, which textgen itself uses.
    advertise_url: str = ""
    command: tuple[str, ...] = ()
    port: int = 0
    models: tuple[str, ...] = ()
    initial_model: str = ""
    capacity: int = 10
    switchable: bool = False
    max_models: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 0
    sleep_mode: bool = False
    engine_python: str = ""
    priority_scheduling: bool = True
    api_key_env: str = ""
    startup_timeout_seconds: float = 300.0
    # A supervised server is killed as hung only after its health checks failed for this long in a row.
    hang_timeout_seconds: float = 30.0
    request_timeout_seconds: float = 300.0
    max_document_bytes: int = 10 * 1024 * 1024
    max_pages: int = 500
    max_pixels: int = 100_000_000
    workers: int = 0
    languages: tuple[str, ...] = ("eng",)


@dataclass(frozen=True)
class LoggingConfig:
    """Structured logs."""

    level: str = "INFO"
    json: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    """The whole configuration; every service reads the part it needs."""

    server: ServerConfig = ServerConfig()
    services: ServicesConfig = ServicesConfig()
    database: DatabaseConfig = DatabaseConfig()
    queue: QueueConfig = QueueConfig()
    auth: AuthConfig = AuthConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    routing: RoutingConfig = RoutingConfig()
    auto_switch: AutoSwitchConfig = AutoSwitchConfig()
    models: dict[str, ModelConfig] = field(default_factory=dict)
    backends: tuple[BackendConfig, ...] = ()
    logging: LoggingConfig = LoggingConfig()
    mesh_tls: MeshTlsConfig = MeshTlsConfig()
    data_dir: str = "./data"
    source: str = ""

    def endpoint(self, service: ServiceName) -> Endpoint:
        if service == "edge":
            return Endpoint(self.server.host, self.server.port, self.server.metrics_port)
        ep: Endpoint = getattr(self.services, service)
        return ep

    def backend(self, name: str) -> BackendConfig:
        for b in self.backends:
            if b.name == name:
                return b
        raise ConfigError(f"backends: no backend named {name!r}")

    def backends_of(self, kind: str) -> tuple[BackendConfig, ...]:
        return tuple(b for b in self.backends if b.kind == kind)

    @property
    def max_document_bytes(self) -> int:
        """The largest OCR document the gateway takes: the highest limit among its OCR backends."""
        return max((b.max_document_bytes for b in self.backends_of("ocr")), default=BackendConfig().max_document_bytes)

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"models: no model named {name!r}") from None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def tls_path(self) -> Path:
        """The directory of the mesh CA and the services' keys and certificates."""
        return Path(self.mesh_tls.dir) if self.mesh_tls.dir else self.data_path / "pki"


def expand_vars(text: str, env: typing.Mapping[str, str] | None = None) -> str:
    """Expands ${VAR} and ${VAR:-default} (the default when VAR is unset or empty)."""
    environ = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        value = environ.get(m.group(1), "")
        if value == "" and m.group(2) is not None:
            return m.group(2)
        return value

    return _VAR.sub(repl, text)


def _expand_tree(node: Any, env: typing.Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return expand_vars(node, env)
    if isinstance(node, list):
        return [_expand_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _expand_tree(v, env) for k, v in node.items()}
    return node


def _apply_env_overrides(raw: dict[str, Any], env: typing.Mapping[str, str]) -> None:
    """AIGW_SECTION__KEY=value sets raw[section][key] (nested with more `__`)."""
    for name, value in env.items():
        if not name.startswith("AIGW_") or "__" not in name:
            continue
        path = [p.lower() for p in name[len("AIGW_") :].split("__")]
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(path)} does not name a section")
            node = child
        node[path[-1]] = value
    if env.get("MONGODB_URI"):
        raw.setdefault("database", {})["uri"] = env["MONGODB_URI"]
    if env.get("JWT_SECRET"):
        raw.setdefault("auth", {})["jwt_secret"] = env["JWT_SECRET"]
    if env.get("AIGW_DATA_DIR"):
        raw["data_dir"] = env["AIGW_DATA_DIR"]
    if env.get("AIGW_ADMIN_PASSWORD"):
        raw.setdefault("auth", {})["admin_password"] = env["AIGW_ADMIN_PASSWORD"]


T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if (value is None or value == "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def _build(cls: type[T], raw: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    # mypy types dataclasses.fields for typeshed's DataclassInstance, which exists for type checkers only.
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def json_upload_bytes(document_bytes: int) -> int:
    """The body a document of `document_bytes` needs as base64 in a JSON upload, with room for the other fields."""
    return 4 * -(-document_bytes // 3) + JSON_UPLOAD_OVERHEAD


def _validate(cfg: GatewayConfig) -> None:
    if cfg.server.max_body_bytes < json_upload_bytes(cfg.max_document_bytes):
        raise ConfigError(
            f"server.max_body_bytes: {cfg.server.max_body_bytes} cannot carry a {cfg.max_document_bytes}-byte document"
            f" as base64 JSON; set it to at least {json_upload_bytes(cfg.max_document_bytes)}"
        )
    ports: dict[int, str] = {}
    for svc in SERVICE_NAMES:
        ep = cfg.endpoint(svc)
        for label, port in (("port", ep.port), ("metrics_port", ep.metrics_port), ("mesh_port", ep.mesh_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"services.{svc}.{label}: {port} is not a TCP port")
            if port and port in ports:
                raise ConfigError(f"services.{svc}.{label}: port {port} is also used by {ports[port]}")
            if port:
                ports[port] = f"{svc}.{label}"
    _validate_mesh_tls(cfg)
    for proxy in cfg.server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"server.trusted_proxies: {proxy!r} is not an IP address or CIDR") from None
    q = cfg.queue
    if q.max_waiting < 0:
        raise ConfigError("queue.max_waiting: must be >= 0")
    if q.timeout <= 0:
        raise ConfigError("queue.timeout: must be > 0 seconds")
    if not 1 <= q.max_attempts <= 10:
        raise ConfigError("queue.max_attempts: must be between 1 and 10")
    if q.lease_ttl_seconds < 1:
        raise ConfigError("queue.lease_ttl_seconds: must be >= 1")
    if "none" in (a.lower() for a in cfg.auth.algorithms):
        raise ConfigError("auth.algorithms: 'none' is never allowed")
    for name, model in cfg.models.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", name):
            raise ConfigError(f"models.{name}: names use letters, digits, '.', '_', ':', '-' (no '/')")
        if model.max_concurrent < 1:
            raise ConfigError(f"models.{name}.max_concurrent: must be >= 1")
    seen: set[str] = set()
    for i, b in enumerate(cfg.backends):
        where = f"backends[{i}]"
        if not b.name:
            raise ConfigError(f"{where}.name: required")
        _check_replicas(b, where)
        for name in (r.name for r in replicas(b)):
            if name in seen:
                raise ConfigError(f"{where}.name: {name!r} is used twice")
            seen.add(name)
        if b.advertise_url:
            _check_advertise_url(b, where)
        for m in b.models:
            if m not in cfg.models:
                raise ConfigError(f"{where}.models: {m!r} is not defined under models")
            if cfg.models[m].kind != ("chat" if b.kind == "textgen" else "ocr"):
                wrong = "an OCR model, not for a textgen" if cfg.models[m].kind == "ocr" else "a chat model, not for an OCR"
                raise ConfigError(f"{where}.models: {m!r} is {wrong} backend")
        if b.initial_model and b.initial_model not in b.models:
            raise ConfigError(f"{where}.initial_model: {b.initial_model!r} is not in its models")
        if b.mode == "attach" and not b.url:
            raise ConfigError(f"{where}.url: required when mode is attach")
        if b.engine in ("transformers", "vllm") and b.mode == "supervise" and b.kind == "textgen" and not b.port:
            raise ConfigError(f"{where}.port: required to supervise a {b.engine} server")
        if b.hang_timeout_seconds <= 0:
            raise ConfigError(f"{where}.hang_timeout_seconds: must be > 0 seconds")
        _check_gpu_share(b, where)


def _check_replicas(b: BackendConfig, where: str) -> None:
    if b.replicas < 0:
        raise ConfigError(f"{where}.replicas: must be >= 0")
    if b.replicas > 1 and INDEX not in b.address and b.address.rsplit(":", 1)[0] not in ("0.0.0.0", "::", "[::]"):
        # Only a pod binding its own address (0.0.0.0), or a single replica, gives every replica one address.
        raise ConfigError(f"{where}.address: {b.address!r} needs {INDEX} so each of the {b.replicas} replicas has its own")
    if INDEX in b.address and not b.replicas:
        raise ConfigError(f"{where}.address: {INDEX} is only for a backend with replicas")


def replicas(b: BackendConfig) -> tuple[BackendConfig, ...]:
    """The backends an entry stands for: itself, or one per replica (`<name>-<i>` at its own address)."""
    if not b.replicas:
        return (b,)
    return tuple(
        dataclasses.replace(b, name=f"{b.name}-{i}", address=b.address.replace(INDEX, str(i)), replicas=0)
        for i in range(b.replicas)
    )


def _check_advertise_url(b: BackendConfig, where: str) -> None:
    """A base URL a router can call: http(s), a host name or IP address, an optional port and /v1, nothing else."""
    key = f"{where}.advertise_url"
    if b.kind != "textgen":
        raise ConfigError(f"{key}: only a textgen backend's engine is called by routers")
    if b.mode != "attach":
        raise ConfigError(f"{key}: only for mode attach (a supervised server listens on 127.0.0.1 alone)")
    parts = urlsplit(b.advertise_url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{key}: {b.advertise_url!r} is not an http(s) URL with a host")
    if port == -1 or parts.username is not None or parts.query or parts.fragment or parts.path.rstrip("/") not in ("", "/v1"):
        raise ConfigError(f"{key}: {b.advertise_url!r} must be scheme://host[:port][/v1] (no credentials, path or query)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not URL_HOST.fullmatch(host):
            raise ConfigError(f"{key}: {host!r} is not a host name or IP address (is the variable that builds it set?)") from None


def _check_gpu_share(b: BackendConfig, where: str) -> None:
    """Each supervised vLLM server claims `gpu_memory_utilization` of the whole GPU for itself (vLLM
    sizes its KV cache from device-wide readings), so `max_models` of them awake together must fit."""
    if b.engine != "vllm" or b.mode != "supervise" or b.max_models < 2:
        return
    total = b.gpu_memory_utilization * b.max_models
    if total > 1.0 + 1e-9:
        raise ConfigError(
            f"{where}.gpu_memory_utilization: {b.gpu_memory_utilization:g} x max_models {b.max_models} = {total:g} "
            f"of the GPU; each model's vLLM server takes that share for itself, so use at most "
            f"{1 / b.max_models:.2f} per model"
        )


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _validate_mesh_tls(cfg: GatewayConfig) -> None:
    """Plaintext between services is only for a mesh that nothing outside this machine can reach."""
    if cfg.mesh_tls.mode != "plaintext":
        return
    hosts = [(f"services.{svc}.host", cfg.endpoint(svc).host) for svc in SERVICE_NAMES if svc != "edge"]
    hosts += [(f"backends[{i}].address", b.address.rsplit(":", 1)[0]) for i, b in enumerate(cfg.backends) if b.address]
    for where, host in hosts:
        if host not in _LOOPBACK and not host.startswith("127."):
            raise ConfigError(
                f"mesh_tls.mode: plaintext leaves internal calls unauthenticated and is only allowed on loopback, "
                f"but {where} is {host!r}"
            )


def parse_config(raw: dict[str, Any] | None, env: typing.Mapping[str, str] | None = None, source: str = "") -> GatewayConfig:
    """Builds and validates a config from parsed YAML plus the environment."""
    environ = os.environ if env is None else env
    tree: dict[str, Any] = _expand_tree(raw or {}, environ)
    if not isinstance(tree, dict):
        raise ConfigError("the config file must hold a mapping at the top level")
    _apply_env_overrides(tree, environ)
    tree["source"] = source
    cfg = _build(GatewayConfig, tree, "")
    _validate(cfg)
    return dataclasses.replace(cfg, backends=tuple(r for b in cfg.backends for r in replicas(b)))


def load_config(path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> GatewayConfig:
    """Loads AIGW_CONFIG (or `path`, or config/config.yaml)."""
    environ = os.environ if env is None else env
    file = Path(path or environ.get("AIGW_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found (set AIGW_CONFIG)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
    return parse_config(raw, environ, str(file))
