"""Mapping HTTP onto request messages and answers back to JSON, on the test-only annotated service."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aigw.router.v1 import router_pb2
from aigw_server.edge.bindings import BindingError, HttpBinding, load_bindings
from aigw_server.edge.jsonmap import FieldError, conform
from aigw_server.edge.templates import PathMatcher
from aigw_server.edge.transcode import RequestBuilder, ResponseRenderer, TranscodeError, parse_query
from tests.protos.compile import EdgeTestProtos


class Mapper:
    """Resolves (method, path?query, body) to the request message the edge would send."""

    def __init__(self, protos: EdgeTestProtos) -> None:
        self.pool, self.bindings = load_bindings(protos.descriptor_set)
        self.matcher: PathMatcher[HttpBinding] = PathMatcher()
        for b in self.bindings:
            self.matcher.register(b.http_method, b.template, b)

    def binding(self, method: str, path: str) -> HttpBinding:
        found = self.matcher.lookup(method, path)
        assert found is not None, f"{method} {path} has no binding"
        return found.target

    def request(self, method: str, target: str, body: bytes = b"", content_type: str = "application/json") -> Any:
        path, _, query = target.partition("?")
        found = self.matcher.lookup(method, path)
        assert found is not None, f"{method} {path} has no binding"
        return RequestBuilder(found.target).build(found.parts, query, body, content_type)


@pytest.fixture(scope="module")
def mapper(edgetest: EdgeTestProtos) -> Mapper:
    return Mapper(edgetest)


def test_every_annotated_method_and_additional_binding_is_loaded(mapper: Mapper) -> None:
    got = {(b.http_method, b.template.text, b.rpc.name) for b in mapper.bindings}
    assert ("GET", "/v1/users/{user_id}/messages/{message_id}", "GetMessage") in got
    assert ("PUT", "/v2/messages/{message_id}", "UpdateMessage") in got
    assert ("GET", "/v1/files/{path=**}", "GetResource") in got
    assert "Hidden" not in {b.rpc.name for b in mapper.bindings}
    assert len(got) == 15


def test_documented_query_parameters_fill_non_path_fields(mapper: Mapper) -> None:
    msg = mapper.request("GET", "/v1/messages/123456?revision=2&sub.subfield=foo")
    assert (msg.message_id, msg.revision, msg.sub.subfield) == ("123456", 2, "foo")


def test_repeated_enum_bool_and_timestamp_query_parameters(mapper: Mapper) -> None:
    msg = mapper.request("GET", "/v1/messages/1?tags=a&tags=b+c&kind=kind_letter&urgent=true&since=2024-05-01T12:00:00Z")
    assert list(msg.tags) == ["a", "b c"]
    assert msg.kind == 2
    assert msg.urgent is True
    assert msg.since.seconds == 1714564800


def test_query_parameters_accept_json_names_and_enum_numbers(mapper: Mapper) -> None:
    msg = mapper.request("GET", "/v1/messages/1?userId=u7&kind=1")
    assert (msg.user_id, msg.kind) == ("u7", 1)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/v1/messages/1?nope=1", "'nope' is not a parameter of this request"),
        ("/v1/messages/1?sub=x", "names a group of fields; set each"),
        ("/v1/messages/1?urgent=yes", "urgent must be true or false"),
        ("/v1/messages/1?revision=two", "revision must be an integer"),
        ("/v1/messages/1?kind=KIND_BOGUS", "kind must be one of note, letter"),
        ("/v1/messages/1?since=2h", "since must be an RFC 3339 time"),
        ("/v1/messages/1?tags=%FF", "UTF-8"),
    ],
)
def test_bad_query_parameters_are_invalid_arguments(mapper: Mapper, target: str, why: str) -> None:
    with pytest.raises(TranscodeError, match=why):
        mapper.request("GET", target)


def test_parameters_without_a_value_separator_are_ignored_as_envoy_does() -> None:
    assert parse_query("a=1&flag&=x&b=") == [("a", "1"), ("b", "")]


def test_documented_field_body_maps_json_into_that_field(mapper: Mapper) -> None:
    msg = mapper.request("PATCH", "/v1/messages/123456?note=n", b'{"text": "Hi!"}')
    assert (msg.message_id, msg.message.text, msg.note) == ("123456", "Hi!", "n")


def test_star_body_maps_every_field_and_the_path_wins(mapper: Mapper) -> None:
    body = orjson.dumps({"message_id": "from-body", "message": {"text": "Hi!"}, "note": "n"})
    msg = mapper.request("PUT", "/v2/messages/123456", body)
    assert (msg.message_id, msg.message.text, msg.note) == ("123456", "Hi!", "n")


def test_json_input_accepts_lower_camel_and_case_insensitive_enums(mapper: Mapper) -> None:
    msg = mapper.request("PUT", "/v2/messages/1", b'{"message": {"messageId": "m", "kind": "kind_note"}}')
    assert (msg.message.message_id, msg.message.kind) == ("m", 1)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"note": "n", "bogus": 1}', 'unknown field "bogus"'),
        (b'{"text": ', "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"message": {"zero": "many"}}', 'message.zero must be an integer; got "many"'),
        (b'{"message": {"zero": 3000000000}}', "message.zero must be an integer from -2147483648 to 2147483647"),
        (b'{"message": {"kind": "poem"}}', 'message.kind must be one of note, letter; got "poem"'),
        (b'{"message": {"empty": "x"}}', "message.empty must be a list"),
        (b'{"message": {"text": 5}}', "message.text must be a string"),
        (b'{"message": "text"}', 'message must be a JSON object; got "text"'),
        (b'{"message": {"messageId": 1}}', "message.message_id must be a string; got 1"),
    ],
)
def test_bad_json_bodies_are_invalid_arguments(mapper: Mapper, body: bytes, why: str) -> None:
    with pytest.raises(TranscodeError, match=why):
        mapper.request("PUT", "/v2/messages/1", body)


@pytest.mark.parametrize(
    "body",
    [b'{"note": "n", "bogus": 1}', b'{"message": {"zero": "many"}}', b'{"message": {"kind": "poem"}}', b'{"message": "x"}'],
)
def test_refusals_never_show_message_types_or_camel_case_field_lists(mapper: Mapper, body: bytes) -> None:
    with pytest.raises(TranscodeError) as caught:
        mapper.request("PUT", "/v2/messages/1", body)
    text = str(caught.value)
    for internal in ("edgetest", "Available", "messageId", "int()", "Failed to parse"):
        assert internal not in text


def test_enums_take_their_short_names_in_any_case(mapper: Mapper) -> None:
    assert mapper.request("PUT", "/v2/messages/1", b'{"message": {"kind": "Letter"}}').message.kind == 2
    assert mapper.request("GET", "/v1/messages/1?kind=note").kind == 1


def test_an_empty_body_is_an_empty_message(mapper: Mapper) -> None:
    msg = mapper.request("POST", "/v1/count", b"")
    assert msg.count == 0


def test_http_body_request_takes_the_raw_body_and_content_type(mapper: Mapper) -> None:
    msg = mapper.request("POST", "/v1/raw:echo", b"\x00\xffraw", "application/octet-stream")
    assert (msg.content_type, msg.data) == ("application/octet-stream", b"\x00\xffraw")


def test_http_body_field_takes_the_raw_body_and_the_rest_comes_from_path_and_query(mapper: Mapper) -> None:
    msg = mapper.request("POST", "/v1/uploads/scan.png?languages=eng&languages=deu", b"\x89PNG", "image/png")
    assert (msg.upload.content_type, msg.upload.data) == ("image/png", b"\x89PNG")
    assert (msg.name, list(msg.languages)) == ("scan.png", ["eng", "deu"])


def test_form_bodies_reach_an_http_body_field_untouched(mapper: Mapper) -> None:
    msg = mapper.request("POST", "/v1/uploads/form", b"username=a&password=b%26c", "application/x-www-form-urlencoded")
    assert msg.upload.data == b"username=a&password=b%26c"


def test_answers_print_snake_case_and_every_primitive(mapper: Mapper, edgetest: EdgeTestProtos) -> None:
    binding = mapper.binding("GET", "/v1/messages/1")
    out = ResponseRenderer(binding, mapper.pool).json(edgetest.pb2.Message(message_id="m", big=2**40))
    assert orjson.loads(out) == {
        "message_id": "m",
        "text": "",
        "received": "",
        "zero": 0,
        "empty": [],
        "kind": "KIND_UNSPECIFIED",
        "big": str(2**40),
    }


def test_response_body_answers_with_one_field(mapper: Mapper, edgetest: EdgeTestProtos) -> None:
    binding = mapper.binding("GET", "/v1/messages/1/text")
    assert ResponseRenderer(binding, mapper.pool).json(edgetest.pb2.Message(text="only this")) == b'"only this"'


def test_stream_events_are_sse_frames(mapper: Mapper, edgetest: EdgeTestProtos) -> None:
    binding = mapper.binding("POST", "/v1/count")
    renderer = ResponseRenderer(binding, mapper.pool)
    assert renderer.sse(edgetest.pb2.CountResponse(index=3)) == b'data: {"index":3}\n\n'


def test_a_path_variable_on_a_message_field_is_refused_at_load(edgetest: EdgeTestProtos) -> None:
    from google.api import annotations_pb2
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(edgetest.descriptor_set)
    proto = next(f for f in fds.file if f.package == "edgetest.v1")
    method = next(m for m in proto.service[0].method if m.name == "GetMessage")
    method.options.Extensions[annotations_pb2.http].get = "/v1/messages/{sub}"
    with pytest.raises(BindingError, match="singular primitive"):
        load_bindings(fds.SerializeToString())


def test_a_float_out_of_range_names_its_field() -> None:
    with pytest.raises(FieldError, match=r"^temperature must be a number between -3\.4e38 and 3\.4e38"):
        conform({"temperature": 1e300}, router_pb2.ChatRequest.DESCRIPTOR)
