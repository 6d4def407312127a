"""Property-based fuzzing of the REST surface: no 5xx whatever the body, path or query; clean Status errors; the mesh stays up."""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.security.conftest import FUZZ_MODEL, SecureMesh
from tests.e2e.security.helpers import CHAT, assert_status_json, raw_get


def fuzz(examples: int) -> settings:
    """Bounded runs against a live mesh: no deadline (a request may wait for the model), no example database files."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


MAX_TOKENS_LIMIT = 131_072
OVERLOAD = frozenset({503, 504})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["tiny-chat", "user", "HIGH", "QUEUED", "$gt", "", "../", "\u0000"])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12
)

CHAT_FIELDS = ["model", "messages", "max_tokens", "temperature", "top_p", "stop", "seed", "priority", "async"]
CHAT_FIELDS += ["idempotency_key", "timeout_seconds", "prompt", "maxTokens", "unknown_field"]
OPENAI_FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n"]
OPENAI_FIELDS += ["stream", "stream_options", "presence_penalty", "frequency_penalty", "user", "tools", "response_format"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls"]
PATCH_FIELDS = ["max_concurrent", "max_waiting", "timeout_seconds", "max_attempts", "default_params", "default_resolution"]
PATCH_FIELDS += ["enabled", "unknown"]


def tame(body: Any) -> Any:
    """Keeps a valid request cheap: a token limit the model would honour becomes 1 (an invalid one stays as it is)."""
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens", "maxTokens"):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 1 < value <= MAX_TOKENS_LIMIT:
                body[key] = 1
    return body


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """A valid body with one to three fields (or fields of its first message) replaced by random JSON or removed."""
    body = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        target = body
        if draw(st.booleans()) and isinstance(body.get("messages"), list) and body["messages"]:
            first = body["messages"][0]
            if isinstance(first, dict):
                target, names = first, MESSAGE_FIELDS
            else:
                names = fields
        else:
            names = fields
        name = draw(st.sampled_from(names))
        if name in target and draw(st.integers(0, 4)) == 0:
            del target[name]
        else:
            target[name] = draw(json_values)
    tame(body)
    return body


def encoded(value: Any) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity included."""
    return json.dumps(value).encode()


def bodies(base: dict[str, Any], fields: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        json_values.map(encoded),
        st.dictionaries(st.sampled_from(fields), json_values, max_size=6).map(tame).map(encoded),
        mutated(base, fields).map(encoded),
        mutated(base, fields).map(encoded),
        st.binary(max_size=64),
    )


def check(status: int, content: bytes, head_only: bool = False) -> None:
    """No server error (overload aside); every error is a clean google.rpc.Status."""
    assert status < 500 or status in OVERLOAD, (status, content[:300])
    if status >= 400 and not head_only:
        assert_status_json(status, content)


@pytest.fixture(scope="module")
def client(secure: SecureMesh) -> Iterator[httpx.Client]:
    with secure.client() as edge:
        yield edge


@pytest.fixture(scope="module")
def user(secure: SecureMesh) -> dict[str, str]:
    return secure.bearer(secure.token("fuzz-user"))


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
def test_fuzzed_chat_bodies(secure: SecureMesh, client: httpx.Client, user: dict[str, str], path: str) -> None:
    @fuzz(120)
    @given(body=bodies(CHAT, CHAT_FIELDS))
    def run(body: bytes) -> None:
        reply = client.post(path, content=body, headers={**user, "content-type": "application/json"})
        check(reply.status_code, reply.content)

    run()


def test_fuzzed_openai_bodies(secure: SecureMesh, client: httpx.Client, user: dict[str, str]) -> None:
    @fuzz(150)
    @given(body=bodies(CHAT, OPENAI_FIELDS))
    def run(body: bytes) -> None:
        reply = client.post("/v1/chat/completions", content=body, headers={**user, "content-type": "application/json"})
        check(reply.status_code, reply.content)

    run()


def no_admin_logins(fields: dict[str, Any]) -> dict[str, Any]:
    """Guesses at the bootstrap admin's password would lock it out for the rest of the package."""
    username = fields.get("username")
    if isinstance(username, str) and username.strip().lower() == "admin":
        fields["username"] = "not-admin"
    return fields


TOKEN_FIELDS = st.sampled_from(["grant_type", "username", "password", "refresh_token", "scope"]) | st.text(max_size=6)
token_forms = st.dictionaries(TOKEN_FIELDS, st.text(max_size=40), max_size=5).map(no_admin_logins)
token_bodies = st.one_of(
    token_forms.map(lambda f: urlencode(f).encode()),
    token_forms.map(lambda f: json.dumps(f).encode()),
    st.dictionaries(TOKEN_FIELDS, json_values, max_size=4).map(lambda f: json.dumps(no_admin_logins(f)).encode()),
    st.binary(max_size=64),
)
CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/json", "", "text/plain", "multipart/form-data; boundary=x"]


def test_fuzzed_token_requests(secure: SecureMesh) -> None:
    with secure.client("127.0.0.90") as client:

        @fuzz(100)
        @given(body=token_bodies, content_type=st.sampled_from(CONTENT_TYPES))
        def run(body: bytes, content_type: str) -> None:
            headers = {"content-type": content_type} if content_type else {}
            reply = client.post("/auth/token", content=body, headers=headers)
            assert reply.status_code in (400, 401, 429), (reply.status_code, reply.text[:300])
            check(reply.status_code, reply.content)

        run()


config_bodies = st.one_of(
    st.fixed_dictionaries(
        {"expected_version": json_values, "patch": st.dictionaries(st.sampled_from(PATCH_FIELDS), json_values, max_size=4)}
    ).map(encoded),
    st.fixed_dictionaries({"patch": st.dictionaries(st.sampled_from(PATCH_FIELDS), scalars, max_size=3)}).map(encoded),
    json_values.map(encoded),
    st.binary(max_size=32),
)
models = st.just(FUZZ_MODEL) | st.text(max_size=12).map(lambda m: quote(m, safe=""))


def test_fuzzed_model_config_updates(secure: SecureMesh, client: httpx.Client) -> None:
    @fuzz(100)
    @given(model=models, body=config_bodies)
    def run(model: str, body: bytes) -> None:
        reply = client.put(
            f"/admin/models/{model}/config", content=body, headers={**secure.admin, "content-type": "application/json"}
        )
        assert reply.status_code in (200, 400, 404, 405, 409), (reply.status_code, reply.text[:300])
        check(reply.status_code, reply.content)

    run()


SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
KNOWN_SEGMENTS = ["api", "chat", "stream", "ocr", "v1", "requests", "models", "admin", "config", "health", "auth", "token"]
ODD_SEGMENTS = [":watch", "..", ".", "%2e%2e", "%2F", "%00", "%ff", "%", "%zz", "tiny-chat", "chat:completions", "", "%C0%AE"]
segments = st.sampled_from(KNOWN_SEGMENTS + ODD_SEGMENTS) | st.text(alphabet=SEGMENT_CHARS, max_size=12)
ROUTE_TEMPLATES = [
    "/health",
    "/api/chat",
    "/api/chat/stream",
    "/api/ocr",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/requests/{}",
    "/v1/requests/{}:watch",
    "/auth/revoke",
    "/admin/models/{}/config",
    "/admin/models/{}/start",
    "/admin/queue/{}",
    "/admin/users/{}",
    "/admin/api-keys/{}",
    "/admin/backends/{}/switch",
    "/admin/requests",
    "/admin/crashes",
]


@st.composite
def routed_paths(draw: st.DrawFn) -> str:
    """A path of the REST surface with random path variables."""
    template = draw(st.sampled_from(ROUTE_TEMPLATES))
    return template.replace("{}", draw(segments)) if "{}" in template else template


paths = routed_paths() | st.lists(segments, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))
queries = st.lists(
    st.tuples(st.text(alphabet=SEGMENT_CHARS + "[]", max_size=10), st.text(alphabet=SEGMENT_CHARS + "[]", max_size=10)),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


def test_fuzzed_paths_and_queries(secure: SecureMesh, user: dict[str, str]) -> None:
    @fuzz(150)
    @given(method=st.sampled_from(METHODS), path=paths, query=queries, authorised=st.booleans())
    def run(method: str, path: str, query: str, authorised: bool) -> None:
        target = f"{path}?{query}" if query else path
        reply = raw_get(secure.url, target, user if authorised else {}, method=method)
        check(reply.status_code, reply.content, head_only=method == "HEAD")

    run()


def test_the_mesh_survived_the_fuzzing(secure: SecureMesh) -> None:
    secure.assert_healthy()
