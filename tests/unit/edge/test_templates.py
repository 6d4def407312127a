"""Path templates and matching, following the examples documented in google/api/http.proto."""

from __future__ import annotations

import pytest

from aigw_server.edge.templates import ANY_METHOD, PathError, PathMatcher, PathTemplate, TemplateError, Variable, bind


def matcher(*bindings: tuple[str, str]) -> PathMatcher[str]:
    """A matcher whose targets are the template texts."""
    m: PathMatcher[str] = PathMatcher()
    for method, text in bindings:
        m.register(method, PathTemplate.parse(text), text)
    return m


def resolve(m: PathMatcher[str], method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(template, {field.path: value}) of the request, or None."""
    found = m.lookup(method, path)
    if found is None:
        return None
    template = PathTemplate.parse(found.target)
    return found.target, {".".join(k): v for k, v in bind(template.variables, found.parts)}


def test_single_variable_is_one_star_segment() -> None:
    t = PathTemplate.parse("/v1/messages/{message_id}")
    assert t.segments == ("v1", "messages", "*")
    assert t.variables == (Variable(("message_id",), 2, 3),)
    assert t.verb == ""


def test_variable_with_segments_and_nested_field_path() -> None:
    t = PathTemplate.parse("/v1/{name=messages/*}/{sub.subfield}:publish")
    assert t.segments == ("v1", "messages", "*", "*")
    assert t.variables == (Variable(("name",), 1, 3), Variable(("sub", "subfield"), 3, 4))
    assert t.verb == "publish"


def test_double_star_variable_ends_relative_to_the_path_end() -> None:
    t = PathTemplate.parse("/v1/{name=files/**}/meta")
    assert t.segments == ("v1", "files", "**", "meta")
    assert t.variables[0].start == 1
    assert t.variables[0].end == -2


@pytest.mark.parametrize(
    "text",
    [
        "v1/messages",  # no leading slash
        "/v1//messages",  # empty segment
        "/v1/{a={b}}",  # nested variable
        "/v1/{9lives}",  # not an identifier
        "/v1/{name",  # unclosed
        "/v1/**/*",  # wildcard after **
        "/v1/messages:",  # empty verb
    ],
)
def test_malformed_templates_are_rejected(text: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.parse(text)


def test_documented_get_message_with_additional_binding() -> None:
    m = matcher(("GET", "/v1/messages/{message_id}"), ("GET", "/v1/users/{user_id}/messages/{message_id}"))
    assert resolve(m, "GET", "/v1/messages/123456") == ("/v1/messages/{message_id}", {"message_id": "123456"})
    assert resolve(m, "GET", "/v1/users/me/messages/123456") == (
        "/v1/users/{user_id}/messages/{message_id}",
        {"user_id": "me", "message_id": "123456"},
    )
    assert resolve(m, "GET", "/v1/messages") is None
    assert resolve(m, "GET", "/v1/messages/1/extra") is None


def test_documented_name_pattern_binds_several_segments() -> None:
    m = matcher(("GET", "/v1/{name=messages/*}"))
    assert resolve(m, "GET", "/v1/messages/123456") == ("/v1/{name=messages/*}", {"name": "messages/123456"})
    assert resolve(m, "GET", "/v1/letters/123456") is None


def test_documented_sub_subfield_in_the_path() -> None:
    m = matcher(("GET", "/v1/messages/{message_id}/{sub.subfield}"))
    template = "/v1/messages/{message_id}/{sub.subfield}"
    assert resolve(m, "GET", "/v1/messages/1/foo") == (template, {"message_id": "1", "sub.subfield": "foo"})


def test_literal_segments_win_over_variables_and_star_over_double_star() -> None:
    m = matcher(("GET", "/v1/books/{id}"), ("GET", "/v1/books/featured"), ("GET", "/v1/{rest=**}"))
    assert resolve(m, "GET", "/v1/books/featured") == ("/v1/books/featured", {})
    assert resolve(m, "GET", "/v1/books/42") == ("/v1/books/{id}", {"id": "42"})
    assert resolve(m, "GET", "/v1/books/42/pages") == ("/v1/{rest=**}", {"rest": "books/42/pages"})


def test_double_star_matches_zero_or_more_segments() -> None:
    m = matcher(("GET", "/v1/files/{path=**}"))
    assert resolve(m, "GET", "/v1/files/a/b/c.txt") == ("/v1/files/{path=**}", {"path": "a/b/c.txt"})
    assert resolve(m, "GET", "/v1/files") == ("/v1/files/{path=**}", {"path": ""})


def test_literals_after_double_star() -> None:
    m = matcher(("GET", "/v1/{name=**}/meta"))
    assert resolve(m, "GET", "/v1/a/b/meta") == ("/v1/{name=**}/meta", {"name": "a/b"})
    assert resolve(m, "GET", "/v1/a/b/data") is None


def test_registered_verbs_select_the_method_and_unknown_verbs_stay_in_the_path() -> None:
    m = matcher(("GET", "/v1/things/{thing.id}:inspect"), ("GET", "/v1/things/{thing.id}"))
    assert resolve(m, "GET", "/v1/things/x:inspect") == ("/v1/things/{thing.id}:inspect", {"thing.id": "x"})
    assert resolve(m, "GET", "/v1/things/x") == ("/v1/things/{thing.id}", {"thing.id": "x"})
    assert resolve(m, "GET", "/v1/things/x:other") == ("/v1/things/{thing.id}", {"thing.id": "x:other"})


def test_trailing_slashes_are_ignored() -> None:
    m = matcher(("POST", "/api/chat"))
    assert resolve(m, "POST", "/api/chat/") == ("/api/chat", {})


def test_single_segment_variables_are_fully_decoded_multi_segment_keep_reserved() -> None:
    m = matcher(("GET", "/v1/messages/{message_id}"), ("GET", "/v1/files/{path=**}"))
    assert resolve(m, "GET", "/v1/messages/a%2Fb%20c%C3%A9") == ("/v1/messages/{message_id}", {"message_id": "a/b cé"})
    assert resolve(m, "GET", "/v1/files/dir/a%2Fb%20c%3F") == ("/v1/files/{path=**}", {"path": "dir/a%2Fb c%3F"})


def test_bad_percent_encoding_is_a_path_error() -> None:
    m = matcher(("GET", "/v1/messages/{message_id}"))
    with pytest.raises(PathError):
        resolve(m, "GET", "/v1/messages/%C3%28")


def test_http_method_is_part_of_the_match() -> None:
    m = matcher(("GET", "/v1/messages/{id}"), ("DELETE", "/v1/messages/{id}"))
    assert m.lookup("POST", "/v1/messages/1") is None
    assert m.allowed_methods("/v1/messages/1") == ["DELETE", "GET"]
    assert m.allowed_methods("/v2/messages/1") == []


def test_custom_star_method_matches_any_method() -> None:
    m = matcher((ANY_METHOD, "/web/{page=**}"))
    assert resolve(m, "OPTIONS", "/web/index.html") == ("/web/{page=**}", {"page": "index.html"})


def test_the_same_method_and_template_twice_is_an_error() -> None:
    m = matcher(("GET", "/v1/messages/{id}"))
    with pytest.raises(TemplateError, match="bound twice"):
        m.register("GET", PathTemplate.parse("/v1/messages/{other}"), "again")
