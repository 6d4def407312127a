"""The blocking client against the stand-in gateway: requests it builds, results it returns, errors it raises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aigw.common.v1 import common_pb2
from aigw_client.calls import ChatInput
from aigw_client.client import (
    AigwClient,
    AigwError,
    AuthError,
    ChatResult,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    TokenInfo,
    Unavailable,
)
from aigw_client.values import to_jsonable
from tests.helpers import free_port
from tests.unit.client.gateway import PASSWORD, GatewayState


def client(address: str, **kwargs: object) -> AigwClient:
    # Each test passes the few keyword options it needs, of their own types; the constructor checks them.
    return AigwClient(address, env={}, **kwargs)  # type: ignore[arg-type]


def test_chat_returns_text_id_and_usage_and_sends_what_was_asked(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user", client_id="team-a", priority="low") as gw:
        result = gw.chat(
            "Hello", model="tiny-chat", system="be brief", max_tokens=16, temperature=0.5, stop=["\n"], priority="high"
        )
    assert (result.text, result.request_id, result.status, result.finish_reason) == ("echo: Hello", "req-1", "SUCCEEDED", "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (3, 5, 8)
    call = gateway.last("Chat")
    assert [(m.role, m.content) for m in call.request.messages] == [("system", "be brief"), ("user", "Hello")]
    assert call.request.max_tokens == 16
    assert call.request.HasField("max_tokens")
    assert not call.request.HasField("top_p")
    assert list(call.request.stop) == ["\n"]
    assert call.request.priority == "high"
    assert call.metadata["authorization"] == "Bearer key-user"
    assert call.metadata["x-client-id"] == "team-a"
    assert call.metadata["x-priority"] == "high"


def test_default_priority_applies_when_the_call_names_none(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user", priority="LOW") as gw:
        gw.chat("Hello")
    call = gateway.last("Chat")
    assert call.metadata["x-priority"] == "low"
    assert call.request.priority == "low"


def test_async_submit_returns_the_id_at_once(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw:
        result = gw.chat("later please", async_mode=True)
    assert (result.request_id, result.status, result.position, result.text) == ("req-async", "QUEUED", 2, "")
    assert gateway.last("Chat").request.async_mode


def test_messages_and_prompt_make_one_conversation(address: str, gateway: GatewayState) -> None:
    history: list[ChatInput] = [{"role": "user", "content": "hi"}, common_pb2.ChatMessage(role="assistant", content="hello")]
    with client(address, api_key="key-user") as gw:
        gw.chat("and now?", messages=history)
    sent = gateway.last("Chat").request.messages
    assert [(m.role, m.content) for m in sent] == [("user", "hi"), ("assistant", "hello"), ("user", "and now?")]


def test_chat_without_a_prompt_is_refused_before_any_call(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(ValueError, match="prompt"):
        gw.chat(system="only a system message")
    assert gateway.calls == []


def test_stream_chat_yields_deltas_then_finish_reason_and_usage(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw:
        events = list(gw.stream_chat("Hi", model="tiny-chat"))
    assert "".join(e.delta for e in events) == "Hello"
    assert events[0].status == "QUEUED"
    assert events[0].position == 1
    assert events[-1].finish_reason == "length"
    assert events[-1].usage is not None
    assert events[-1].usage.total_tokens == 8
    assert {e.request_id for e in events} == {"req-2"}


def test_openai_style_completion_and_chunks(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw:
        completion = gw.chat_completion([{"role": "user", "content": "Hi"}], model="tiny-chat")
        chunks = list(gw.stream_chat_completion([{"role": "user", "content": "Hi"}]))
    assert completion["object"] == "chat.completion"
    assert completion["id"] == "req-1"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "echo: Hi"}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["total_tokens"] == 8
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_ocr_of_a_path_sends_its_bytes_and_options(address: str, gateway: GatewayState, tmp_path: Path) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF-1.7 fake")
    with client(address, api_key="key-user") as gw:
        result = gw.ocr(pdf, resolution="LARGE", languages="eng,deu", pages="2-3", include_layout=True, output_format="markdown")
    request = gateway.last("Ocr").request
    assert request.document == b"%PDF-1.7 fake"
    assert (request.resolution, list(request.languages)) == ("large", ["eng", "deu"])
    assert (request.first_page, request.last_page, request.include_layout) == (2, 3, True)
    assert request.output_format == "markdown"
    assert [p.page for p in result.pages] == [2, 3]
    assert result.text == "page 2 text\fpage 3 text"
    assert (result.document_type, result.page_count, result.engine) == ("pdf", 4, "tesseract")


def test_ocr_of_bytes_and_its_stream_page_by_page(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw:
        events = list(gw.stream_ocr(b"\x89PNG fake", pages="3-"))
    pages = [e.page for e in events if e.page is not None]
    assert [p.page for p in pages] == [3, 4]
    assert events[0].page is None
    assert events[0].position == 1
    request = gateway.last("StreamOcr").request
    assert (request.first_page, request.last_page) == (3, 0)


@pytest.mark.parametrize("pages", ["0", "3-2", "a-b", "1-2-3"])
def test_bad_page_ranges_are_refused_before_any_call(address: str, gateway: GatewayState, pages: str) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(ValueError, match="pages"):
        gw.ocr(b"\x89PNG", pages=pages)
    assert gateway.calls == []


def test_ocr_of_a_missing_file_raises_os_error(address: str, tmp_path: Path) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(FileNotFoundError):
        gw.ocr(tmp_path / "nope.pdf")


def test_request_status_cancel_watch_and_wait(address: str, gateway: GatewayState) -> None:
    with client(address, api_key="key-user") as gw:
        info = gw.get_request("r1")
        cancelled = gw.cancel_request("r1")
        events = list(gw.watch_request("r1"))
        waited = gw.wait_request("doomed")
    assert info.done
    assert info.state == "SUCCEEDED"
    assert info.kind == "chat"
    assert info.priority == "high"
    assert isinstance(info.result, ChatResult)
    assert info.result.text == "the answer"
    assert info.result.usage.total_tokens == 8
    assert cancelled.state == "CANCELLED"
    assert [(e.event, e.request.state) for e in events] == [
        ("position", "QUEUED"),
        ("granted", "RUNNING"),
        ("finished", "SUCCEEDED"),
    ]
    assert events[0].request.position == 2
    assert events[1].request.backend == "cpu-0"
    assert waited.state == "FAILED"
    assert waited.error_code == "DEADLINE_EXCEEDED"
    assert to_jsonable(info)["done"] is True


@pytest.mark.parametrize(
    ("prompt", "error", "code"),
    [
        ("full", RateLimited, "RESOURCE_EXHAUSTED"),
        ("down", Unavailable, "UNAVAILABLE"),
        ("bad", InvalidRequest, "INVALID_ARGUMENT"),
        ("forbidden", PermissionDenied, "PERMISSION_DENIED"),
    ],
)
def test_gateway_errors_map_to_the_hierarchy_with_their_message(
    address: str, gateway: GatewayState, prompt: str, error: type[AigwError], code: str
) -> None:
    gateway.full_times = 1
    with client(address, api_key="key-user") as gw, pytest.raises(error) as caught:
        gw.chat(prompt)
    assert caught.value.code == code
    assert caught.value.message
    assert "Traceback" not in caught.value.message


def test_rate_limit_carries_retry_after_and_bad_request_its_field(address: str, gateway: GatewayState) -> None:
    gateway.full_times, gateway.retry_after = 1, 2.5
    with client(address, api_key="key-user") as gw:
        with pytest.raises(RateLimited) as limited:
            gw.chat("full")
        with pytest.raises(InvalidRequest) as bad:
            gw.chat("bad")
    assert limited.value.retry_after == pytest.approx(2.5)
    assert limited.value.retryable
    assert "retry after 2.5 s" in str(limited.value)
    assert bad.value.field_violations == (("temperature", "temperature: must be in [0, 2]"),)


def test_internal_errors_are_the_base_class_and_leak_nothing(address: str) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(AigwError) as caught:
        gw.chat("boom")
    assert type(caught.value) is AigwError
    assert caught.value.code == "INTERNAL"
    assert "internal detail" not in caught.value.message


def test_not_found_and_missing_credentials(address: str) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(NotFound, match="missing"):
        gw.get_request("missing")
    with client(address) as anonymous, pytest.raises(AuthError, match="missing credential"):
        anonymous.models()


def test_an_unreachable_gateway_is_unavailable_and_names_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    with client(address, api_key="k", timeout=5) as gw, pytest.raises(Unavailable, match=address):
        gw.models()


def test_without_retry_a_full_queue_fails_at_once(address: str, gateway: GatewayState) -> None:
    gateway.full_times = 1
    with client(address, api_key="key-user") as gw, pytest.raises(RateLimited):
        gw.chat("full")
    assert gateway.methods() == ["Chat"]


def test_retry_honours_retry_after_and_keeps_one_idempotency_key(address: str, gateway: GatewayState) -> None:
    gateway.full_times, gateway.retry_after = 2, 0.1
    start = time.monotonic()
    with client(address, api_key="key-user", retry=RetryPolicy(max_attempts=3)) as gw:
        result = gw.chat("full")
    assert result.text == "echo: full"
    assert time.monotonic() - start >= 0.2
    keys = {c.request.idempotency_key for c in gateway.calls}
    assert len(gateway.calls) == 3
    assert len(keys) == 1
    assert "" not in keys


def test_retry_gives_up_after_max_attempts_and_on_long_retry_after(address: str, gateway: GatewayState) -> None:
    gateway.full_times, gateway.retry_after = 5, 0.01
    with client(address, api_key="key-user", retry=RetryPolicy(max_attempts=2)) as gw, pytest.raises(RateLimited):
        gw.chat("full")
    assert len(gateway.calls) == 2
    gateway.reset()
    gateway.full_times, gateway.retry_after = 1, 60
    with client(address, api_key="key-user", retry=RetryPolicy(max_retry_after=1)) as gw, pytest.raises(RateLimited):
        gw.chat("full")
    assert len(gateway.calls) == 1


def test_a_stream_is_not_retried_once_it_has_yielded(address: str, gateway: GatewayState) -> None:
    seen: list[str] = []
    with client(address, api_key="key-user", retry=True) as gw, pytest.raises(Unavailable, match="went away"):
        for event in gw.stream_chat("break"):
            seen.append(event.delta)
    assert "".join(seen) == "Hello"
    assert gateway.methods() == ["StreamChat"]


def test_login_then_admin_calls_carry_the_token(address: str, gateway: GatewayState) -> None:
    tokens: list[TokenInfo] = []
    with client(address, on_token=tokens.append) as gw:
        info = gw.login("admin", PASSWORD)
        models = gw.list_models()
    assert info.role == "admin"
    assert info.refresh_token == "refresh-1"
    assert info.expires_at > time.time() + 800
    assert tokens == [info]
    assert gw.token == info
    assert [m.model for m in models.models] == ["tiny-chat"]
    assert gateway.last("ListModels").metadata["authorization"] == "Bearer access-1"
    assert "authorization" not in gateway.last("IssueToken").metadata


def test_wrong_password_is_an_auth_error(address: str) -> None:
    with client(address) as gw, pytest.raises(AuthError, match="invalid username or password"):
        gw.login("admin", "wrong")


def test_a_rejected_token_is_refreshed_once_and_the_call_repeated(address: str, gateway: GatewayState) -> None:
    tokens: list[TokenInfo] = []
    with client(address, on_token=tokens.append) as gw:
        gw.login("admin", PASSWORD)
        gateway.valid_tokens.discard("access-1")
        stats = gw.queue_stats("tiny-chat")
    assert stats.processing == 3
    assert gateway.methods() == ["IssueToken", "GetQueueStats", "IssueToken", "GetQueueStats"]
    assert gateway.calls[2].request.grant_type == "refresh_token"
    assert [t.access_token for t in tokens] == ["access-1", "access-2"]


def test_a_token_about_to_expire_is_refreshed_before_the_call(address: str, gateway: GatewayState) -> None:
    gateway.expires_in = 10
    with client(address) as gw:
        gw.login("admin", PASSWORD)
        gw.queue_stats("tiny-chat")
    assert gateway.methods() == ["IssueToken", "IssueToken", "GetQueueStats"]
    assert gateway.last("GetQueueStats").metadata["authorization"] == "Bearer access-2"


def test_a_refused_refresh_asks_to_log_in_again(address: str, gateway: GatewayState) -> None:
    with client(address) as gw:
        gw.login("admin", PASSWORD)
        gateway.valid_tokens.discard("access-1")
        gateway.refresh_tokens.clear()
        with pytest.raises(AuthError, match="log in again"):
            gw.queue_stats("tiny-chat")
        assert gw.token is None


def test_a_saved_token_without_refresh_token_is_not_refreshed(address: str, gateway: GatewayState) -> None:
    with client(address, token="expired") as gw, pytest.raises(AuthError, match="token expired"):
        gw.list_models()
    assert gateway.methods() == ["ListModels"]


def test_logout_revokes_the_refresh_token(address: str, gateway: GatewayState) -> None:
    with client(address) as gw:
        gw.login("admin", PASSWORD)
        gw.logout()
        assert gw.token is None
    assert gateway.last("RevokeToken").request.refresh_token == "refresh-1"
    assert "refresh-1" not in gateway.refresh_tokens


def test_credentials_from_the_environment(address: str, gateway: GatewayState) -> None:
    with AigwClient(address, env={"AIGW_API_KEY": "key-user"}) as gw:
        gw.models()
    assert gateway.last("ListModels").metadata["authorization"] == "Bearer key-user"
    with AigwClient(address, env={"AIGW_API_KEY": "key-user", "AIGW_TOKEN": "key-admin"}) as gw:
        gw.models()
    assert gateway.last("ListModels").metadata["authorization"] == "Bearer key-admin"
    with AigwClient(address, api_key="key-user", env={"AIGW_TOKEN": "key-admin"}) as gw:
        gw.models()
    assert gateway.last("ListModels").metadata["authorization"] == "Bearer key-user"


def test_address_from_the_environment_serves_both_apis(address: str, gateway: GatewayState) -> None:
    with AigwClient(env={"AIGW_GRPC_ADDRESS": address, "AIGW_TOKEN": "key-admin"}) as gw:
        assert gw.admin_address == address
        gw.models()
        gw.list_models()
    assert gateway.methods() == ["ListModels", "ListModels"]


def test_model_config_change_merges_generation_defaults_on_the_current_version(address: str, gateway: GatewayState) -> None:
    with client(address, token="key-admin") as gw:
        config = gw.set_model_config("tiny-chat", {"max_concurrent": "4", "temperature": "0.2"})
        with pytest.raises(Conflict, match="version"):
            gw.set_model_config("tiny-chat", {"enabled": "false"}, expected_version=1)
        with pytest.raises(ValueError, match="unknown setting"):
            gw.set_model_config("tiny-chat", {"colour": "blue"})
    request = gateway.last("UpdateModelConfig").request
    assert request.expected_version == 1
    first = next(c for c in gateway.calls if c.method == "UpdateModelConfig").request
    assert first.expected_version == 3
    assert first.patch.max_concurrent == 4
    params = first.patch.default_params
    assert params.max_tokens == 64
    assert params.temperature == pytest.approx(0.2)
    assert config.version == 4
    assert config.max_concurrent == 4


def test_admin_operations_send_their_arguments(address: str, gateway: GatewayState) -> None:
    with client(address, token="key-admin") as gw:
        assert gw.start_model("tiny-chat", backend="cpu-1").backend == "cpu-1"
        assert gw.stop_model("tiny-chat", force=True).backends == ["cpu-0"]
        assert gw.switch_backend("gpu-0", "big").outcome == "switched to big"
        assert gw.sleep_backend("gpu-0", level=2).outcome == "asleep at level 2"
        assert gateway.last("SleepBackend").request.backend == "gpu-0"
        assert gw.wake_backend("gpu-0").outcome == "woken: gpu-0"
        crashes = gw.crashes(kind="lease_lost", since=1_700_000_000.0, page_size=5)
        history = gw.requests_history(state="failed", kind="chat", page_size=2)
        user = gw.create_user("bob", "a long password!", role="user", allowed_client_ids=["team-b"])
        updated = gw.update_user("bob", disabled=True, allowed_client_ids=[])
        key = gw.create_api_key(name="ci")
        revoked = gw.revoke_api_key("k1")
        assert gw.set_autoswitch(True) is True
        assert gw.get_autoswitch().enabled
    assert gateway.last("StopModel").request.force
    crash_request = gateway.last("ListCrashes").request
    assert crash_request.kind == 1
    assert crash_request.since.seconds == 1_700_000_000
    assert crash_request.page_size == 5
    history_request = gateway.last("ListRequests").request
    assert history_request.state == common_pb2.FAILED
    assert history_request.kind == common_pb2.JOB_KIND_CHAT
    assert [j.request_id for j in history.requests] == ["r1", "r2"]
    assert crashes.events[0].message == "lease lapsed"
    assert list(user.allowed_client_ids) == ["team-b"]
    assert updated.disabled
    update_request = gateway.last("UpdateUser").request
    assert update_request.set_allowed_client_ids
    assert not update_request.HasField("role")
    assert key.api_key == "aigw_k1_s3cr3t"
    assert revoked.HasField("revoked_at")


def test_unknown_filter_values_are_refused_with_the_choices(address: str) -> None:
    with client(address, token="key-admin") as gw, pytest.raises(ValueError, match="lease_lost"):
        gw.crashes(kind="meteor")


def test_admin_calls_need_the_admin_role(address: str) -> None:
    with client(address, api_key="key-user") as gw, pytest.raises(PermissionDenied, match="admin role"):
        gw.list_users()
