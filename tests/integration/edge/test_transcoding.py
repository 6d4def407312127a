"""REST requests through the edge reach the test gRPC service as the HttpRule annotations say, and come back as JSON."""

from __future__ import annotations

import re

from tests.integration.edge.conftest import Running


async def test_path_variable_and_query_parameters(running: Running) -> None:
    r = await running.client.get("/v1/messages/123456", params={"revision": "2", "sub.subfield": "foo", "tags": ["a", "b"]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["message_id"] == "123456"
    assert body["received"] == 'message_id: "123456" revision: 2 sub { subfield: "foo" } tags: "a" tags: "b"'


async def test_answers_are_snake_case_with_every_primitive_printed(running: Running) -> None:
    body = (await running.client.get("/v1/messages/1")).json()
    assert body == {
        "message_id": "1",
        "text": "",
        "received": 'message_id: "1"',
        "zero": 0,
        "empty": [],
        "kind": "KIND_UNSPECIFIED",
        "big": "1099511627776",
    }


async def test_additional_binding(running: Running) -> None:
    body = (await running.client.get("/v1/users/me/messages/9")).json()
    assert body["received"] == 'message_id: "9" user_id: "me"'


async def test_field_body_and_star_body(running: Running) -> None:
    patched = (await running.client.patch("/v1/messages/5?note=n", json={"text": "Hi!"})).json()
    assert (patched["message_id"], patched["text"]) == ("5", "Hi!")
    assert 'note: "n"' in patched["received"]
    put = (await running.client.put("/v2/messages/6", json={"message": {"text": "Yo"}, "note": "m"})).json()
    assert (put["message_id"], put["text"]) == ("6", "Yo")


async def test_input_accepts_lower_camel_names(running: Running) -> None:
    body = (await running.client.put("/v2/messages/6", json={"message": {"messageId": "inner"}})).json()
    assert 'message { message_id: "inner" }' in body["received"]


async def test_multi_segment_variables(running: Running) -> None:
    book = (await running.client.get("/v1/shelves/1/books/2")).json()
    assert book["received"] == 'name: "shelves/1/books/2"'
    files = (await running.client.get("/v1/files/a/b/c.txt")).json()
    assert files["received"] == 'path: "a/b/c.txt"'


async def test_custom_verb_selects_its_method(running: Running) -> None:
    inspected = (await running.client.get("/v1/things/x:inspect")).json()
    plain = (await running.client.get("/v1/things/x")).json()
    assert (inspected["message_id"], inspected["text"]) == ("x", "inspect")
    assert (plain["message_id"], plain["text"]) == ("x", "get")


async def test_response_body_field(running: Running) -> None:
    r = await running.client.get("/v1/messages/7/text")
    assert r.json() == "text of 7"


async def test_http_body_in_and_out_keeps_bytes_and_content_type(running: Running) -> None:
    r = await running.client.post("/v1/raw:echo", content=b"hello \xff", headers={"content-type": "text/x-custom"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/x-custom"
    assert r.content == b"HELLO \xff"


async def test_http_body_field_gets_the_raw_upload_and_query_fields(running: Running) -> None:
    data = bytes(range(256)) * 40
    target = "/v1/uploads/scan.png?languages=eng&languages=deu"
    r = await running.client.post(target, content=data, headers={"content-type": "image/png"})
    assert r.json() == {"size": str(len(data)), "content_type": "image/png", "name": "scan.png", "languages": ["eng", "deu"]}


async def test_form_encoded_body_reaches_an_http_body_field(running: Running) -> None:
    r = await running.client.post("/v1/uploads/token", data={"username": "alice", "password": "p&ss"})
    assert r.json()["content_type"] == "application/x-www-form-urlencoded"
    assert r.json()["size"] == str(len("username=alice&password=p%26ss"))


async def test_request_headers_become_metadata(running: Running) -> None:
    headers = {
        "Authorization": "Bearer t0ken",
        "X-Client-ID": "app-1",
        "X-Priority": "high",
        "X-Resolution": "gundam",
        "Prefer": "respond-async",
        "User-Agent": "edge-test/1.0",
        "X-Forwarded-For": "203.0.113.9",
        "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "hop-by-hop",
        "TE": "trailers",
        "grpc-timeout": "1n",
        "X-Trace-Bin": "AAEC",
    }
    r = await running.client.get("/v1/headers", headers=headers)
    assert r.status_code == 200
    md = r.json()["metadata"]
    assert md["authorization"] == "Bearer t0ken"
    assert (md["x-client-id"], md["x-priority"], md["x-resolution"], md["prefer"]) == ("app-1", "high", "gundam", "respond-async")
    assert md["x-forwarded-user-agent"] == "edge-test/1.0"
    # The peer is no trusted proxy, so the address it claims to forward for is not believed.
    assert md["x-forwarded-for"] == "127.0.0.1"
    for dropped in ("connection", "x-drop-me", "te", "x-trace-bin", "host", "content-length"):
        assert dropped not in md
    assert re.fullmatch(r"[0-9a-f]{32}", md["x-request-id"])
    assert r.headers["x-request-id"] == md["x-request-id"]
    assert r.headers["x-served-by"] == "edgetest"
    assert "grpc-internal" not in r.headers


async def test_client_request_id_is_kept_and_returned(running: Running) -> None:
    r = await running.client.get("/v1/headers", headers={"X-Request-ID": "req-42"})
    assert r.json()["metadata"]["x-request-id"] == "req-42"
    assert r.headers["x-request-id"] == "req-42"


async def test_a_unary_answers_request_id_comes_from_its_trailing_metadata(running: Running) -> None:
    r = await running.client.get("/v1/headers", headers={"X-Request-ID": "req-43", "X-Answer-Id-Trailing": "router-id-1"})
    assert r.json()["metadata"]["x-request-id"] == "req-43"
    assert r.headers["x-request-id"] == "router-id-1"
    assert r.headers.get_list("x-request-id") == ["router-id-1"]
    # Only the request id is taken from the trailers: the others are not headers (nor are they under Envoy).
    assert "x-trailing-only" not in r.headers
    assert r.headers["x-served-by"] == "edgetest"


async def test_a_request_id_in_initial_metadata_still_names_the_answer(running: Running) -> None:
    r = await running.client.get("/v1/headers", headers={"X-Request-ID": "req-44", "X-Answer-Id-Initial": "router-id-2"})
    assert r.headers.get_list("x-request-id") == ["router-id-2"]


async def test_the_trailing_request_id_wins_over_an_initial_one(running: Running) -> None:
    sent = {"X-Answer-Id-Initial": "router-id-3", "X-Answer-Id-Trailing": "router-id-4"}
    r = await running.client.get("/v1/headers", headers=sent)
    assert r.headers.get_list("x-request-id") == ["router-id-4"]


async def test_client_address_is_the_forwarded_for_value_when_none_was_sent(running: Running) -> None:
    md = (await running.client.get("/v1/headers")).json()["metadata"]
    assert md["x-forwarded-for"] == "127.0.0.1"
