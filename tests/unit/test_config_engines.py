"""Backend settings for routers' direct engine calls: the advertised engine URL and replicated entries."""

from __future__ import annotations

import pytest

from aigw_server.runtime.config import ConfigError, expand_vars, parse_config
from aigw_server.textgen.settings import resolve_settings

MODELS = {"llama": {"kind": "chat"}}


def attached(**extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "gpu",
        "engine": "vllm",
        "mode": "attach",
        "url": "http://127.0.0.1:8000",
        "models": ["llama"],
    }
    entry.update(extra)
    return {"models": MODELS, "backends": [entry]}


def test_textgen_advertises_its_setting_and_keeps_its_own_url() -> None:
    settings = resolve_settings(parse_config(attached(advertise_url="http://10.1.2.3:8000/v1/"), {}), {})
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.advertise_url == "http://10.1.2.3:8000"


def test_without_advertise_url_nothing_changes() -> None:
    settings = resolve_settings(parse_config(attached(), {}), {})
    assert settings.advertise_url == ""


def test_the_environment_builds_the_advertised_url() -> None:
    raw = attached(advertise_url="${AIGW_TEXTGEN_ADVERTISE_URL:-}")
    assert parse_config(raw, {}).backends[0].advertise_url == ""
    cfg = parse_config(raw, {"AIGW_TEXTGEN_ADVERTISE_URL": "http://10.244.1.9:8000"})
    assert cfg.backends[0].advertise_url == "http://10.244.1.9:8000"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("10.0.0.1:8000", r"backends\[0\]\.advertise_url: '10\.0\.0\.1:8000' is not an http\(s\) URL with a host"),
        ("ftp://10.0.0.1", r"is not an http\(s\) URL"),
        ("http://:8000", r"is not an http\(s\) URL with a host"),
        ("http://10.0.0.1:99999", r"must be scheme://host\[:port\]\[/v1\]"),
        ("http://10.0.0.1:8000/api", r"must be scheme://host\[:port\]\[/v1\]"),
        ("http://user:pw@10.0.0.1:8000", r"no credentials"),
        ("http://10.0.0.1:8000?x=1", r"no credentials, path or query"),
        # What Kubernetes leaves when the variable the URL is built from is missing.
        ("http://$(AIGW_POD_IP):8000", r"'\$\(aigw_pod_ip\)' is not a host name or IP address"),
    ],
)
def test_a_bad_advertised_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(attached(advertise_url=url), {})


def test_advertise_url_is_for_attached_textgen_engines_only() -> None:
    with pytest.raises(ConfigError, match=r"advertise_url: only for mode attach"):
        parse_config(attached(mode="supervise", port=8100, advertise_url="http://10.0.0.1:8000"), {})
    ocr = {
        "models": {"o": {"kind": "ocr"}},
        "backends": [
            {
                "name": "o",
                "kind": "ocr",
                "engine": "deepseek-ocr",
                "mode": "attach",
                "url": "http://x:8000",
                "models": ["o"],
                "advertise_url": "http://10.0.0.1:8000",
            }
        ],
    }
    with pytest.raises(ConfigError, match=r"advertise_url: only a textgen backend"):
        parse_config(ocr, {})


def test_ipv6_and_host_names_are_accepted() -> None:
    for url in ("http://[fd00::7]:8000", "https://textgen-0.textgen.aigw.svc:8000", "http://localhost:8000/v1"):
        assert parse_config(attached(advertise_url=url), {}).backends[0].advertise_url == url


def test_a_replicated_entry_is_one_backend_per_pod() -> None:
    cfg = parse_config(attached(name="textgen", replicas="${N:-3}", address="${ADDR:-textgen-{index}.textgen:50053}"), {})
    assert [(b.name, b.address, b.replicas) for b in cfg.backends] == [
        ("textgen-0", "textgen-0.textgen:50053", 0),
        ("textgen-1", "textgen-1.textgen:50053", 0),
        ("textgen-2", "textgen-2.textgen:50053", 0),
    ]
    # The pod itself binds every interface, whichever ordinal it is.
    pod = parse_config(
        attached(name="textgen", replicas=2, address="${ADDR:-textgen-{index}.textgen:50053}"), {"ADDR": "0.0.0.0:50053"}
    )
    assert [b.address for b in pod.backends] == ["0.0.0.0:50053", "0.0.0.0:50053"]
    assert resolve_settings(pod, {"AIGW_BACKEND": "textgen-1"}).address == "0.0.0.0:50053"
    # A single replica (the compose host) may keep a plain address.
    one = parse_config(attached(name="textgen", replicas=1, address="textgen:50053"), {})
    assert [(b.name, b.address) for b in one.backends] == [("textgen-0", "textgen:50053")]


def test_a_default_may_hold_a_placeholder() -> None:
    assert expand_vars("${A:-x-{index}.y}", {}) == "x-{index}.y"
    assert expand_vars("${A:-x-{index}.y}", {"A": "z"}) == "z"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"replicas": -1}, r"backends\[0\]\.replicas: must be >= 0"),
        ({"replicas": 2, "address": "textgen:50053"}, r"backends\[0\]\.address: 'textgen:50053' needs \{index\}"),
        ({"address": "textgen-{index}:50053"}, r"\{index\} is only for a backend with replicas"),
    ],
)
def test_bad_replicas_are_config_errors(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(attached(**extra), {})


def test_replica_names_must_not_clash() -> None:
    replicated = {
        "name": "t",
        "replicas": 2,
        "address": "t-{index}.t:50053",
        "engine": "openai",
        "mode": "attach",
        "url": "http://x",
    }
    raw = {"models": MODELS, "backends": [replicated, {**replicated, "name": "t-1", "replicas": 0, "address": "t:50053"}]}
    with pytest.raises(ConfigError, match=r"backends\[1\]\.name: 't-1' is used twice"):
        parse_config(raw, {})
