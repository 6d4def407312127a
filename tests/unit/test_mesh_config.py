"""The local mesh's config builder: what it writes is a valid gateway config that says what the spec asked for."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aigw_server.runtime.config import JwtKey, RateLimit, ServiceName, load_config, parse_config
from harness.mesh_config import (
    AttachedEngine,
    Auth,
    ChatModel,
    MeshSpec,
    OcrModel,
    QueueKnobs,
    RoutingKnobs,
    SupervisedEngine,
    TesseractOcr,
)


def spec(data: Path) -> MeshSpec:
    return MeshSpec(
        data_dir=data,
        auth=Auth("s" * 40, "admin-password"),
        models=(
            ChatModel("chat", max_concurrent=3, max_waiting=7, default_max_tokens=5, path=data / "model"),
            ChatModel("parked", max_concurrent=1),
            OcrModel("tesseract", max_concurrent=2, languages=("eng", "deu")),
        ),
        backends=(
            AttachedEngine("up", "http://127.0.0.1:9", models=("chat",), capacity=64),
            SupervisedEngine(
                "sup", "openai", models=("chat",), capacity=8, command=("serve", "{port}"), startup_timeout_seconds=30
            ),
            TesseractOcr(),
        ),
    )


def test_every_port_of_the_mesh_is_distinct(tmp_path: Path) -> None:
    cfg = parse_config(spec(tmp_path).raw(), env={})
    endpoints = [cfg.server.port, cfg.server.metrics_port]
    names: tuple[ServiceName, ...] = ("router", "queue", "textgen", "ocr", "admin")
    for name in names:
        endpoint = cfg.endpoint(name)
        endpoints += [endpoint.port, endpoint.metrics_port, endpoint.mesh_port]
    endpoints += [int(b.address.rsplit(":", 1)[1]) for b in cfg.backends] + [b.port for b in cfg.backends if b.port]
    used = [p for p in endpoints if p]
    assert len(used) == len(set(used)) == 2 + 12 + 3 + 1


def test_the_written_file_is_the_config_the_launcher_loads(tmp_path: Path) -> None:
    cfg = load_config(spec(tmp_path).write(tmp_path / "mesh.yaml"), env={})
    assert cfg.data_dir == str(tmp_path)
    assert cfg.database.embedded
    assert cfg.mesh_tls.mode == "mtls"
    assert (cfg.auth.jwt_secret, cfg.auth.admin_password) == ("s" * 40, "admin-password")
    chat, parked, ocr = (cfg.models[n] for n in ("chat", "parked", "tesseract"))
    assert (chat.kind, chat.max_concurrent, chat.max_waiting, chat.default_max_tokens) == ("chat", 3, 7, 5)
    assert chat.path == str(tmp_path / "model")
    assert (parked.max_waiting, parked.default_max_tokens) == (None, 256)  # unset: the gateway's defaults
    assert (ocr.kind, ocr.languages) == ("ocr", ("eng", "deu"))
    up, sup, tess = cfg.backends
    assert (up.mode, up.engine, up.url, up.initial_model, up.capacity) == ("attach", "openai", "http://127.0.0.1:9", "chat", 64)
    assert (sup.mode, sup.command, sup.startup_timeout_seconds) == ("supervise", ("serve", "{port}"), 30)
    assert sup.port > 0
    assert (tess.kind, tess.engine, tess.models, tess.capacity) == ("ocr", "tesseract", ("tesseract",), 2)


def test_unset_knobs_leave_the_gateways_defaults(tmp_path: Path) -> None:
    raw = spec(tmp_path).raw()
    assert not {"queue", "routing", "rate_limit", "mesh_tls"} & raw.keys()
    cfg = parse_config(raw, env={})
    defaults = parse_config({}, env={})
    assert (cfg.queue, cfg.routing, cfg.rate_limit) == (defaults.queue, defaults.routing, defaults.rate_limit)


def test_knobs_tls_and_auth_reach_the_config(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    base = spec(tmp_path)
    changed = replace(
        base,
        tls=False,
        log_level="WARNING",
        rate_limit=RateLimit(requests_per_minute=600, burst=50),
        queue=QueueKnobs(max_waiting=12, timeout=150, lease_ttl_seconds=4),
        routing=RoutingKnobs(direct_engines=False, queue_session=False),
        auth=replace(
            base.auth,
            algorithms=("HS256", "RS256"),
            public_keys=(JwtKey("k1", "RS256", str(pem)),),
            login_attempts_per_minute=5,
        ),
    )
    cfg = parse_config(changed.raw(), env={})
    assert cfg.mesh_tls.mode == "plaintext"
    assert cfg.logging.level == "WARNING"
    assert (cfg.rate_limit.default.requests_per_minute, cfg.rate_limit.default.burst) == (600, 50)
    assert (cfg.queue.max_waiting, cfg.queue.timeout, cfg.queue.lease_ttl_seconds) == (12, 150, 4)
    assert (cfg.routing.direct_engines, cfg.routing.queue_session) == (False, False)
    assert cfg.auth.algorithms == ("HS256", "RS256")
    assert cfg.auth.public_keys == (JwtKey("k1", "RS256", str(pem)),)
    assert cfg.auth.login_attempts_per_minute == 5


def test_ports_can_be_given(tmp_path: Path) -> None:
    raw = spec(tmp_path).raw(iter(range(30000, 30100)))
    assert (raw["server"]["port"], raw["server"]["metrics_port"]) == (30000, 30001)
    assert raw["services"]["router"] == {"host": "127.0.0.1", "port": 30002, "metrics_port": 30003, "mesh_port": 30004}
    assert [b["address"] for b in raw["backends"]] == ["127.0.0.1:30014", "127.0.0.1:30015", "127.0.0.1:30017"]
    assert raw["backends"][1]["port"] == 30016
