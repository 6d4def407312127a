"""The aigw CLI in-process against the stand-in gateway: arguments, output, saved logins and exit codes."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from aigw_client.cli import main
from tests.helpers import free_port
from tests.unit.client.gateway import PASSWORD, GatewayState

Captured = pytest.CaptureFixture[str]


@pytest.fixture
def env(address: str, tmp_path: Path) -> dict[str, str]:
    """The gateway's address, a private config home and an admin API key."""
    return {"AIGW_GRPC_ADDRESS": address, "AIGW_CONFIG_HOME": str(tmp_path / "cfg"), "AIGW_API_KEY": "key-admin"}


def run(capsys: Captured, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), env)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_chat_prints_the_answer_and_its_summary_apart(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    code, out, err = run(capsys, env, "chat", "Hello", "--model", "tiny-chat", "--max-tokens", "16", "--priority", "high")
    assert (code, out) == (0, "echo: Hello\n")
    assert "request req-1" in err
    assert "3 prompt + 5 completion tokens" in err
    call = gateway.last("Chat")
    assert call.request.max_tokens == 16
    assert call.metadata["x-priority"] == "high"


@pytest.mark.parametrize("argv", [["--json", "chat", "Hi"], ["chat", "Hi", "--json"]])
def test_json_is_accepted_before_and_after_the_command(capsys: Captured, env: dict[str, str], argv: list[str]) -> None:
    code, out, _ = run(capsys, env, *argv)
    data = json.loads(out)
    assert code == 0
    assert data["request_id"] == "req-1"
    assert data["usage"]["total_tokens"] == 8
    assert data["text"] == "echo: Hi"


def test_chat_stream_and_async(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    code, out, err = run(capsys, env, "chat", "Hi", "--stream")
    assert (code, out) == (0, "Hello\n")
    assert "length" in err
    code, out, err = run(capsys, env, "chat", "Hi", "--async")
    assert (code, out) == (0, "req-async\n")
    assert "aigw requests watch req-async" in err
    code, out, _ = run(capsys, env, "chat", "Hi", "--stream", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert "".join(x["delta"] for x in lines) == "Hello"
    assert lines[-1]["finish_reason"] == "length"


def test_prompt_from_stdin(capsys: Captured, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from a pipe"))
    code, out, _ = run(capsys, env, "chat", "-")
    assert (code, out) == (0, "echo: from a pipe\n")


@pytest.mark.parametrize(
    ("prompt", "code", "message"),
    [
        ("full", 4, "queue of tiny-chat is full"),
        ("down", 4, "no healthy backend"),
        ("forbidden", 3, "not allowed"),
        ("bad", 1, "temperature: must be in [0, 2]"),
        ("boom", 1, "internal error"),
    ],
)
def test_gateway_errors_print_its_message_and_exit_with_their_code(
    capsys: Captured, env: dict[str, str], gateway: GatewayState, prompt: str, code: int, message: str
) -> None:
    gateway.full_times = 1
    got, out, err = run(capsys, env, "chat", prompt)
    assert (got, out) == (code, "")
    assert err.startswith("aigw: error: ")
    assert message in err


def test_a_field_violation_is_printed_once_without_a_repeated_prefix(
    capsys: Captured, env: dict[str, str], gateway: GatewayState
) -> None:
    code, _, err = run(capsys, env, "chat", "bad")
    assert code == 1
    assert err.count("temperature: must be in [0, 2]") == 1
    assert "temperature: temperature:" not in err


def test_missing_credentials_exit_3_with_a_hint(capsys: Captured, env: dict[str, str]) -> None:
    del env["AIGW_API_KEY"]
    code, _, err = run(capsys, env, "models")
    assert code == 3
    assert "aigw login" in err
    assert "missing credential" in err


def test_unreachable_gateway_exits_4(capsys: Captured, env: dict[str, str]) -> None:
    env["AIGW_GRPC_ADDRESS"] = f"127.0.0.1:{free_port()}"
    code, _, err = run(capsys, env, "models", "--timeout", "5")
    assert code == 4
    assert "cannot reach the gateway" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["chat", "x", "--priority", "urgent"],
        ["chat", "x", "--stream", "--async"],
        ["ocr", "f", "--resolution", "huge"],
        ["admin"],
    ],
)
def test_usage_errors_exit_2(capsys: Captured, env: dict[str, str], gateway: GatewayState, argv: list[str]) -> None:
    code, out, err = run(capsys, env, *argv)
    assert code == 2
    assert out == ""
    assert "usage:" in err
    assert gateway.calls == []


def test_help_exits_0(capsys: Captured, env: dict[str, str]) -> None:
    code, out, _ = run(capsys, env, "ocr", "--help")
    assert code == 0
    assert "--resolution" in out


def test_ocr_sends_the_file_with_its_options(
    capsys: Captured, env: dict[str, str], gateway: GatewayState, tmp_path: Path
) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF-1.7 fake")
    code, out, err = run(capsys, env, "ocr", str(pdf), "--resolution", "large", "--languages", "eng,deu", "--pages", "1-3")
    header = "=== page {} of 4 (eng, ocr, confidence 92) ==="
    assert (code, out) == (0, "\n\n".join(f"{header.format(n)}\npage {n} text" for n in (1, 2, 3)) + "\n")
    assert "\f" not in out
    assert "pdf" in err
    assert "3 of 4 pages" in err
    request = gateway.last("Ocr").request
    assert (request.resolution, list(request.languages), request.first_page, request.last_page) == ("large", ["eng", "deu"], 1, 3)
    code, out, _ = run(capsys, env, "ocr", str(pdf), "--json", "--pages", "2")
    assert json.loads(out)["pages"][0]["page"] == 2


def test_ocr_stream_prints_each_page_under_a_header(capsys: Captured, env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG")
    code, out, _ = run(capsys, env, "ocr", str(image), "--stream", "--pages", "3-")
    assert code == 0
    assert out.splitlines() == [
        "=== page 3 of 4 (eng, ocr, confidence 92) ===",
        "page 3 text",
        "=== page 4 of 4 (eng, ocr, confidence 92) ===",
        "page 4 text",
    ]


def test_ocr_bad_file_or_pages_exit_2(capsys: Captured, env: dict[str, str], gateway: GatewayState, tmp_path: Path) -> None:
    code, _, err = run(capsys, env, "ocr", str(tmp_path / "missing.pdf"))
    assert code == 2
    assert "missing.pdf" in err
    assert "No such file" in err
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    code, _, err = run(capsys, env, "ocr", str(tmp_path / "a.png"), "--pages", "3-1")
    assert code == 2
    assert "pages" in err
    assert gateway.calls == []


def test_requests_get_cancel_and_watch(capsys: Captured, env: dict[str, str]) -> None:
    code, out, _ = run(capsys, env, "requests", "get", "r1")
    assert code == 0
    assert "state:" in out
    assert "SUCCEEDED" in out
    assert out.rstrip().endswith("the answer")
    code, out, _ = run(capsys, env, "requests", "cancel", "r1", "--json")
    assert code == 0
    assert json.loads(out)["state"] == "CANCELLED"
    code, out, _ = run(capsys, env, "requests", "watch", "r1")
    assert code == 0
    assert out.splitlines()[:3] == [
        "position  QUEUED  position 2",
        "granted  RUNNING  on cpu-0",
        "finished  SUCCEEDED",
    ]
    code, out, _ = run(capsys, env, "requests", "watch", "doomed")
    assert code == 1
    assert "DEADLINE_EXCEEDED" in out
    code, _, err = run(capsys, env, "requests", "get", "missing")
    assert code == 1
    assert "no request 'missing'" in err


def test_login_saves_the_token_privately_and_later_commands_use_it(
    capsys: Captured, env: dict[str, str], gateway: GatewayState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    del env["AIGW_API_KEY"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, _ = run(capsys, env, "login", "-u", "admin", "--password-stdin")
    path = tmp_path / "cfg" / "credentials.json"
    assert code == 0
    assert "Logged in as admin (admin)" in out
    assert str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["token"]["access_token"] == "access-1"
    assert saved["router_address"] == env["AIGW_GRPC_ADDRESS"]
    no_address = {"AIGW_CONFIG_HOME": env["AIGW_CONFIG_HOME"]}
    code, out, _ = run(capsys, no_address, "admin", "models")
    assert code == 0
    assert "tiny-chat" in out
    assert "cpu-0" in out
    assert gateway.last("ListModels").metadata["authorization"] == "Bearer access-1"


def test_a_refreshed_token_is_saved_back_and_logout_removes_it(
    capsys: Captured, env: dict[str, str], gateway: GatewayState, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    del env["AIGW_API_KEY"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert run(capsys, env, "login", "--username", "admin", "--password-stdin")[0] == 0
    gateway.valid_tokens.discard("access-1")
    code, out, _ = run(capsys, env, "admin", "queue", "tiny-chat")
    path = tmp_path / "cfg" / "credentials.json"
    assert code == 0
    assert "processing:" in out
    assert "3 of 10" in out
    assert json.loads(path.read_text())["token"]["access_token"] == "access-2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, _, err = run(capsys, env, "logout")
    assert code == 0
    assert not path.exists()
    assert "Logged out" in err
    assert gateway.last("RevokeToken").request.refresh_token == "refresh-2"


def test_wrong_password_exits_3_and_saves_nothing(
    capsys: Captured, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("nope\n"))
    code, _, err = run(capsys, env, "login", "-u", "admin", "--password-stdin")
    assert code == 3
    assert "invalid username or password" in err
    assert not (tmp_path / "cfg" / "credentials.json").exists()


def test_admin_model_commands(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    assert run(capsys, env, "admin", "start", "tiny-chat", "--backend", "cpu-1")[1] == "loaded (backend cpu-1, 1234 ms)\n"
    assert run(capsys, env, "admin", "stop", "tiny-chat", "--force")[0] == 0
    assert gateway.last("StopModel").request.force
    code, _, err = run(capsys, env, "admin", "start", "nope")
    assert code == 1
    assert "no model 'nope'" in err
    code, out, _ = run(capsys, env, "admin", "queue", "tiny-chat", "--json")
    assert json.loads(out)["total_processed"] == 120  # a JSON number, as the original API gave it
    assert run(capsys, env, "admin", "switch", "gpu-0", "big")[1].startswith("switched to big")
    assert run(capsys, env, "admin", "sleep", "gpu-0", "--level", "2")[1] == "asleep at level 2 (20 ms)\n"
    assert gateway.last("SleepBackend").request.backend == "gpu-0"
    assert run(capsys, env, "admin", "wake", "gpu-0")[1] == "woken: gpu-0 (30 ms)\n"
    assert run(capsys, env, "admin", "sleep", "gpu-0", "--level", "3")[0] == 2


def test_admin_series_prints_a_row_per_minute(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    code, out, _ = run(capsys, env, "admin", "series", "tiny-chat", "--minutes", "2")
    assert code == 0
    assert gateway.last("GetQueueSeries").request.minutes == 2
    lines = out.splitlines()
    assert lines[0] == "tiny-chat, minutes of 60 s (UTC)"
    assert lines[2].split() == ["08:00", "0.0", "0", "0", "0", "-", "-", "0", "0"]
    assert lines[3].split() == ["08:01", "12.0", "5", "1", "0", "120/300/410", "2/9/9", "3", "1"]
    code, out, _ = run(capsys, env, "admin", "series", "tiny-chat", "--json")
    assert json.loads(out)["minutes"][1]["peak_running"] == 3
    assert not gateway.last("GetQueueSeries").request.HasField("minutes")


def test_admin_config_get_and_set(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    code, out, _ = run(capsys, env, "admin", "config", "get", "tiny-chat")
    lines = {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    assert code == 0
    assert lines["version"] == "3"
    assert lines["default_params.max_tokens"] == "64"
    assert lines["default_params.temperature"] == "0.7"
    code, out, _ = run(capsys, env, "admin", "config", "set", "tiny-chat", "max_concurrent=4", "temperature=0.2")
    assert code == 0
    assert "max_concurrent:" in out
    assert "4" in out
    patch = gateway.last("UpdateModelConfig").request.patch
    assert patch.max_concurrent == 4
    assert patch.default_params.max_tokens == 64
    code, _, err = run(capsys, env, "admin", "config", "set", "tiny-chat", "colour=blue")
    assert code == 2
    assert "unknown setting" in err
    code, _, err = run(capsys, env, "admin", "config", "set", "tiny-chat", "max_concurrent")
    assert code == 2
    assert "key=value" in err
    code, _, err = run(capsys, env, "admin", "config", "set", "tiny-chat", "enabled=false", "--expected-version", "1")
    assert code == 1
    assert "version" in err


def test_admin_records(capsys: Captured, env: dict[str, str], gateway: GatewayState) -> None:
    code, out, _ = run(capsys, env, "admin", "crashes", "--since", "2h", "--kind", "lease_lost")
    assert code == 0
    assert "lease_lost" in out
    assert "lease lapsed" in out
    assert "2027-01-15" in out
    assert gateway.last("ListCrashes").request.since.seconds > 0
    code, out, err = run(capsys, env, "admin", "requests", "--state", "FAILED", "--limit", "2")
    assert code == 0
    assert "r2" in out
    assert "FAILED" in out
    assert "--page-token p2" in err
    code, _, err = run(capsys, env, "admin", "crashes", "--since", "yesterday")
    assert code == 2
    assert "duration" in err


def test_admin_users_keys_and_autoswitch(
    capsys: Captured, env: dict[str, str], gateway: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password!\n"))
    code, out, _ = run(capsys, env, "admin", "users", "create", "bob", "--client-ids", "team-b,team-c", "--password-stdin")
    assert code == 0
    assert "bob" in out
    assert "team-b,team-c" in out
    assert gateway.last("CreateUser").request.password == "a long password!"
    assert run(capsys, env, "admin", "users", "update", "bob", "--disable")[0] == 0
    update = gateway.last("UpdateUser").request
    assert update.disabled
    assert update.HasField("disabled")
    assert not update.HasField("password")
    assert run(capsys, env, "admin", "users", "delete", "bob")[1] == "Deleted user bob\n"
    code, out, err = run(capsys, env, "admin", "keys", "create", "--name", "ci")
    assert (code, out) == (0, "aigw_k1_s3cr3t\n")
    assert "shown only now" in err
    assert "k1" in run(capsys, env, "admin", "keys", "list")[1]
    assert "Revoked API key k1" in run(capsys, env, "admin", "keys", "revoke", "k1")[1]
    assert run(capsys, env, "admin", "autoswitch", "on")[1] == "auto-switch: on\n"
    assert gateway.autoswitch
    code, out, _ = run(capsys, env, "admin", "autoswitch")
    assert code == 0
    assert out.startswith("auto-switch: on (window 7 days")
    assert "b is queued" in out


def test_user_role_cannot_administer(capsys: Captured, env: dict[str, str]) -> None:
    env["AIGW_API_KEY"] = "key-user"
    code, _, err = run(capsys, env, "admin", "users", "list")
    assert code == 3
    assert "admin role" in err
    assert "aigw login" not in err


def test_health_and_models(capsys: Captured, env: dict[str, str]) -> None:
    code, out, _ = run(capsys, env, "health")
    assert code == 0
    assert out.startswith("ok (version test)")
    assert "queue: SERVING" in out
    assert run(capsys, env, "models")[1] == "tiny-chat\ntesseract\n"
