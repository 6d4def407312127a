"""The token endpoint reads typed gRPC fields, form-encoded bodies and JSON bodies alike, and names what is wrong."""

from __future__ import annotations

import pytest

from aigw_server.admin.token_request import TokenRequest, parse_token_request
from aigw_server.runtime.errors import InvalidArgument

NO_FIELDS: dict[str, str] = {}
FORM = "application/x-www-form-urlencoded"


def test_form_body() -> None:
    body = b"username=alice&password=p%40ss+word%26more"
    assert parse_token_request(NO_FIELDS, FORM, body) == TokenRequest("password", "alice", "p@ss word&more", "")


def test_json_body_with_charset() -> None:
    body = b'{"grant_type": "refresh_token", "refresh_token": "abc"}'
    assert parse_token_request(NO_FIELDS, "application/json; charset=utf-8", body) == TokenRequest("refresh_token", "", "", "abc")


def test_json_body_without_content_type() -> None:
    assert parse_token_request(NO_FIELDS, "", b' {"username": "bob", "password": "x"}').username == "bob"


def test_typed_fields_win_over_the_body() -> None:
    typed = {"username": "alice", "password": "typed", "grant_type": "", "refresh_token": ""}
    asked = parse_token_request(typed, FORM, b"username=mallory&password=body")
    assert (asked.username, asked.password) == ("alice", "typed")


def test_typed_fields_alone() -> None:
    asked = parse_token_request({"username": "alice", "password": "secret"}, "", b"")
    assert asked == TokenRequest("password", "alice", "secret", "")


@pytest.mark.parametrize(
    ("content_type", "body", "field", "message"),
    [
        ("application/json", b"{not json", "form", "malformed JSON"),
        ("application/json", b"[" * 10_000, "form", "malformed JSON"),
        ("application/json", b'["username"]', "form", "JSON object"),
        ("application/json", b'{"username": 5, "password": "x"}', "username", "expected a string"),
        (FORM, b"username=a&username=b&password=x", "username", "more than once"),
        (FORM, b"\xff\xfe", "form", "malformed form"),
        ("text/plain", b"username=a&password=b", "form", "unsupported content type"),
        (FORM, b"grant_type=client_credentials", "grant_type", "must be 'password' or 'refresh_token'"),
        (FORM, b"grant_type=refresh_token", "refresh_token", "required"),
        (FORM, b"username=alice", "password", "required"),
        (FORM, b"password=x", "username", "required"),
        (FORM, b"username=" + b"a" * 9000 + b"&password=x", "username", "too long"),
        (FORM, b"x" * 20000, "form", "larger than"),
    ],
)
def test_bad_requests_name_the_field(content_type: str, body: bytes, field: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as bad:
        parse_token_request(NO_FIELDS, content_type, body)
    assert bad.value.field == field


@pytest.mark.parametrize("field", ["username", "password", "refresh_token", "grant_type"])
def test_credentials_in_the_url_of_a_rest_request_are_refused(field: str) -> None:
    typed = {"grant_type": "", "username": "", "password": "", "refresh_token": "", field: "in-the-query"}
    body = b"username=alice&password=correct-horse-battery"
    with pytest.raises(InvalidArgument, match="never in the URL"):
        parse_token_request(typed, "application/x-www-form-urlencoded", body, over_rest=True)
    with pytest.raises(InvalidArgument, match="never in the URL"):
        parse_token_request(typed, "", b"", over_rest=True)


def test_a_rest_body_alone_is_fine() -> None:
    typed = {"grant_type": "", "username": "", "password": "", "refresh_token": ""}
    asked = parse_token_request(typed, "application/x-www-form-urlencoded", b"username=alice&password=pw", over_rest=True)
    assert (asked.username, asked.password) == ("alice", "pw")
