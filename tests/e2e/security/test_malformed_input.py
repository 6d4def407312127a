"""Malformed JSON, wrong types, unknown enums and deep nesting get 400 with a clear message; garbage protobuf crashes nothing."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from aigw_server.edge.service import descriptor_set_path
from aigw_server.runtime import authz
from tests.e2e.security.conftest import FUZZ_MODEL, SecureMesh
from tests.e2e.security.helpers import CHAT, INVALID_ARGUMENT, NOT_FOUND, is_clean, refusal

JSON_ENDPOINTS = ["/api/chat", "/api/chat/stream", "/v1/chat/completions"]
DEEP = 100_000

BROKEN_BODIES = {
    "truncated": (b'{"model": "tiny-chat", "messages": [', "JSON"),
    "not JSON at all": (b"model=tiny-chat", "JSON"),
    "an array": (b'[{"model": "tiny-chat"}]', "object"),
    "a string": (b'"tiny-chat"', "object"),
    "a number": (b"42", "object"),
    "NaN": (b'{"model": "tiny-chat", "temperature": NaN}', "JSON"),
    "invalid UTF-8": (b'{"model": "tiny\xff\xfe"}', ""),
    f"{DEEP} nested arrays": (b'{"model": ' + b"[" * DEEP + b"]" * DEEP + b"}", ""),
    f"{DEEP} nested objects": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, ""),
}

WRONG_FIELDS: dict[str, tuple[dict[str, object], str]] = {
    "max_tokens as a word": ({"max_tokens": "ten"}, "max_tokens"),
    "max_tokens beyond 64 bits": ({"max_tokens": 10**30}, ""),
    "max_tokens as a float": ({"max_tokens": 1.5}, "max_tokens"),
    "temperature as an object": ({"temperature": {"value": 1}}, "temperature"),
    "temperature out of range": ({"temperature": 1e300}, "temperature"),
    "messages as a string": ({"messages": "hi"}, "messages"),
    "a message as a list": ({"messages": [["user", "hi"]]}, "messages"),
    "role as a number": ({"messages": [{"role": 1, "content": "hi"}]}, "role"),
    "unknown role": ({"messages": [{"role": "root", "content": "hi"}]}, "role"),
    "stop as an object": ({"stop": {"a": 1}}, "stop"),
    "model as a list": ({"model": ["tiny-chat"]}, "model"),
    "negative max_tokens": ({"max_tokens": -5}, "max_tokens"),
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
def test_a_broken_json_body_gets_400(secure: SecureMesh, path: str, case: str) -> None:
    body, hint = BROKEN_BODIES[case]
    with secure.client() as client:
        reply = client.post(path, content=body, headers={**secure.bearer(secure.token()), "content-type": "application/json"})
    status = refusal(reply, 400, INVALID_ARGUMENT)
    assert hint.lower() in status["message"].lower(), status


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("case", sorted(WRONG_FIELDS))
def test_a_field_of_the_wrong_type_or_range_gets_400_naming_it(secure: SecureMesh, path: str, case: str) -> None:
    change, field = WRONG_FIELDS[case]
    with secure.client() as client:
        reply = client.post(path, json={**CHAT, **change}, headers=secure.bearer(secure.token()))
    status = refusal(reply, 400, INVALID_ARGUMENT)
    assert field in status["message"], status


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_an_unknown_model_gets_404(secure: SecureMesh, path: str) -> None:
    with secure.client() as client:
        reply = client.post(path, json={**CHAT, "model": "no-such-model"}, headers=secure.bearer(secure.token()))
    refusal(reply, 404, NOT_FOUND, "no-such-model")


ADMIN_BAD_INPUT = [
    ("PUT", f"/admin/models/{FUZZ_MODEL}/config", b'{"patch": {"max_waiting": "many"}}', "max_waiting"),
    ("PUT", "/admin/models/tesseract/config", b'{"patch": {"default_resolution": "ULTRA"}}', "ULTRA"),
    ("PUT", f"/admin/models/{FUZZ_MODEL}/config", b'{"patch": {"max_waiting": -1}}', "max_waiting"),
    ("PUT", f"/admin/models/{FUZZ_MODEL}/config", b'{"patch": {"max_concurrent": 99999999999}}', "max_concurrent"),
    ("PUT", f"/admin/models/{FUZZ_MODEL}/config", b"[1, 2]", "object"),
    ("PUT", f"/admin/models/{FUZZ_MODEL}/config", b'{"patch": ' + b"[" * DEEP + b"]" * DEEP + b"}", ""),
    ("POST", "/admin/users", b'{"username": 7, "password": "long-enough-password"}', "username"),
    ("POST", "/admin/users", b'{"username": "x", "password": "short"}', ""),
    ("GET", "/admin/requests?state=NOT_A_STATE", b"", "NOT_A_STATE"),
    ("GET", "/admin/crashes?kind=BOGUS", b"", "BOGUS"),
    ("GET", "/admin/requests?page_size=ten", b"", "page_size"),
    ("GET", "/admin/requests?since=yesterday", b"", "since"),
    ("GET", "/admin/requests?page_token=%7B%22%24gt%22%3A%22%22%7D", b"", "page_token"),
]


@pytest.mark.parametrize(
    ("verb", "target", "body", "hint"), ADMIN_BAD_INPUT, ids=[f"{v} {t} {b[:30]!r}" for v, t, b, _ in ADMIN_BAD_INPUT]
)
def test_bad_admin_input_gets_400(secure: SecureMesh, verb: str, target: str, body: bytes, hint: str) -> None:
    with secure.client() as client:
        reply = client.request(verb, target, content=body or None, headers={**secure.admin, "content-type": "application/json"})
    status = refusal(reply, 400, INVALID_ARGUMENT)
    assert hint in status["message"], status


TOKEN_BODIES = {
    "broken JSON": ("application/json", b'{"username": "admin", "password": '),
    "JSON array": ("application/json", b'["admin", "password"]'),
    "username as a number": ("application/json", b'{"username": 1, "password": "x"}'),
    "deeply nested JSON within the size limit": ("application/json", b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "deeply nested JSON over the size limit": ("application/json", b'{"username": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "form with a field twice": ("application/x-www-form-urlencoded", b"username=a&username=b&password=x"),
    "form that is not UTF-8": ("application/x-www-form-urlencoded", b"username=\xff&password=x"),
    "unknown grant type": ("application/x-www-form-urlencoded", b"grant_type=client_credentials"),
    "unsupported content type": ("text/xml", b"<login/>"),
}


@pytest.mark.parametrize("case", sorted(TOKEN_BODIES))
def test_a_malformed_token_request_gets_400(secure: SecureMesh, case: str) -> None:
    content_type, body = TOKEN_BODIES[case]
    with secure.client("127.0.0.70") as client:
        reply = client.post("/auth/token", content=body, headers={"content-type": content_type})
    refusal(reply, 400, INVALID_ARGUMENT)


OCR_BAD_UPLOADS = {
    "PNG header then garbage": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
    "corrupt PDF": ("application/pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nstartxref\n999999\n%%EOF"),
    "text disguised as JPEG": ("image/jpeg", b"this is not an image at all" * 10),
    "empty upload": ("image/png", b""),
}


@pytest.mark.parametrize("case", sorted(OCR_BAD_UPLOADS))
def test_a_bad_ocr_upload_gets_400(secure: SecureMesh, case: str) -> None:
    content_type, body = OCR_BAD_UPLOADS[case]
    with secure.client() as client:
        reply = client.post("/api/ocr", content=body, headers={**secure.bearer(secure.token()), "content-type": content_type})
    refusal(reply, 400, INVALID_ARGUMENT)


def service_methods() -> list[tuple[str, str, type[Message], bool]]:
    """(package, gRPC path, request class, server-streaming) of every method of every aigw service."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set_path().read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    methods = []
    for file in fds.file:
        if not file.package.startswith("aigw."):
            continue
        for service in file.service:
            full = f"{file.package}.{service.name}"
            for method in pool.FindServiceByName(full).methods:
                cls = message_factory.GetMessageClass(method.input_type)
                methods.append((file.package, f"/{full}/{method.name}", cls, method.server_streaming))
    return methods


def garbage_for(cls: type[Message], rng: random.Random) -> list[bytes]:
    """Bytes the request message cannot be parsed from: fixed classics plus random ones checked locally."""
    fixed = [b"\xff" * 11, b"\x0f", b"\x0a\xff\x01abc", b"\x0a\x05\xff\xfe\xfd\xfc\xfb"]
    found: list[bytes] = []
    while len(found) < 3:
        data = rng.randbytes(rng.randint(1, 64))
        try:
            cls.FromString(data)
        except DecodeError:
            found.append(data)
    candidates = []
    for data in fixed + found:
        try:
            cls.FromString(data)
        except DecodeError:
            candidates.append(data)
    return candidates


# Packages served by more than one kind of program: every backend serves the lifecycle contract.
SERVED_BY = {"backend": ("textgen", "ocr")}


def programs_for(secure: SecureMesh, package: str) -> list[str]:
    """The mesh programs serving `package` (at least one)."""
    kind = package.split(".")[1]
    kinds = SERVED_BY.get(kind, (kind,))
    names = [name for name in secure.mesh.grpc_addresses() if any(name == k or name.startswith(f"{k}-") for k in kinds)]
    assert names, f"no program serves {package}"
    return names


def channel_for(secure: SecureMesh, program: str, path: str) -> grpc.Channel:
    """A channel to `program`, as a service identity the policy lets call `path`."""
    callers = sorted(authz.POLICY[path] - {authz.PUBLIC})
    return secure.mesh.open(program, identity=callers[0])


def refused_code(channel: grpc.Channel, path: str, data: bytes, streaming: bool) -> tuple[grpc.StatusCode, str]:
    """Calls `path` with raw bytes as the request message; the status it fails with."""
    try:
        if streaming:
            list(channel.unary_stream(path, request_serializer=bytes, response_deserializer=bytes)(data, timeout=10))
        else:
            channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)(data, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError(f"{path} accepted a request it cannot parse")


def test_garbage_protobuf_is_refused_and_no_service_crashes(secure: SecureMesh) -> None:
    rng = random.Random(20261127)
    methods = service_methods()
    assert len(methods) >= 60
    wrong = []
    for package, path, cls, streaming in methods:
        for program in programs_for(secure, package):
            with channel_for(secure, program, path) as channel:
                for data in garbage_for(cls, rng):
                    code, details = refused_code(channel, path, data, streaming)
                    if code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL) or not is_clean(details):
                        wrong.append(f"{program} {path}: {code.name} {details[:120]!r}")
    secure.assert_healthy()
    assert not wrong, f"{len(wrong)} refusals with the wrong code or leaking details, e.g.:\n" + "\n".join(wrong[:5])
