"""Page tokens are opaque and checked: a tampered one is INVALID_ARGUMENT and never reaches the store."""

from __future__ import annotations

import base64

import pytest

from aigw_server.queue.crashlog import decode_cursor, encode_cursor
from aigw_server.router.gate import Caller, Gate
from aigw_server.runtime.auth import Principal
from aigw_server.runtime.errors import InvalidArgument, NotFound, request_not_found


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_a_token_this_service_made_round_trips() -> None:
    assert decode_cursor(encode_cursor(1_700_000_000_000, "0123abcd")) == (1_700_000_000_000, "0123abcd")


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "not base64!",
        b64("no separator"),
        b64("abc|key"),
        b64("-5|key"),
        b64(f"{10**30}|key"),
        b64("1700000000000|"),
        b64("1700000000000|with space"),
        base64.urlsafe_b64encode(b"17\xff|k").decode(),
        "é",
    ],
)
def test_a_tampered_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_cursor(token)


def test_someone_elses_request_and_an_unknown_one_answer_the_same() -> None:
    caller = Caller(Principal("alice", "user", "jwt"), "alice")
    with pytest.raises(NotFound) as theirs:
        Gate.check_visible(caller, "r-1", "bob")
    assert str(theirs.value) == str(request_not_found("r-1"))
