"""The `aigw` command line: chat, OCR, request status and gateway administration, over the Python client.

Exit codes: 0 ok, 1 the request failed, 2 usage error, 3 authentication or permission error,
4 rate limited, queue full or gateway unavailable. Errors print the gateway's message, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from aigw_client import render as text
from aigw_client.calls import GenerationOptions, OcrOptions
from aigw_client.client import AigwClient, AigwError, AuthError, PermissionDenied, RateLimited, Unavailable, to_jsonable
from aigw_client.enums import PRIORITIES, RESOLUTIONS
from aigw_client.logins import SavedLogin, credentials_path, delete_login, load_login, save_login
from aigw_client.values import ChatResult, OcrResult, TokenInfo

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_BUSY = 0, 1, 2, 3, 4
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """The command line is wrong; exit code 2."""


class Cli:
    """One run of the command: parsed arguments, environment and a lazily opened client."""

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str]) -> None:
        self.args = args
        self.env = env
        self._client: AigwClient | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def out(self, value: str = "", end: str = "\n") -> None:
        sys.stdout.write(value + end)
        sys.stdout.flush()

    def note(self, value: str) -> None:
        """Human commentary goes to stderr, so stdout stays the answer itself."""
        sys.stderr.write(value + "\n")

    def dump(self, value: Any) -> None:
        """Prints `value` as indented JSON."""
        self.out(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))

    def emit(self, value: Any, human: Callable[[], str]) -> None:
        """Prints `value` as JSON with --json, else its human text."""
        if self.json:
            self.dump(value)
        else:
            self.out(human())

    def emit_line(self, value: Any) -> None:
        """One JSON object per line (streams with --json)."""
        self.out(json.dumps(to_jsonable(value), ensure_ascii=False))

    def _addresses(self, saved: SavedLogin | None) -> tuple[str | None, str | None]:
        a = self.args
        explicit = a.address or a.admin_address or self.env.get("AIGW_GRPC_ADDRESS") or self.env.get("AIGW_ADMIN_ADDRESS")
        if saved is not None and not explicit:
            return saved.router_address or None, saved.admin_address or None
        return a.address, a.admin_address

    def _save(self, info: TokenInfo) -> None:
        assert self._client is not None
        save_login(SavedLogin(info, self._client.router_address, self._client.admin_address), self.env)

    @property
    def client(self) -> AigwClient:
        if self._client is None:
            a = self.args
            from_env = self.env.get("AIGW_TOKEN") or self.env.get("AIGW_API_KEY")
            saved = None if (a.token or a.api_key or from_env) else load_login(self.env)
            address, admin_address = self._addresses(saved)
            self._client = AigwClient(
                address,
                admin_address=admin_address,
                token=a.token or (saved.token if saved else None),
                api_key=a.api_key,
                client_id=a.client_id,
                timeout=a.timeout or 30.0,
                retry=True if a.retry else None,
                tls=True if a.tls else None,
                on_token=self._save if saved else None,
                env=self.env,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# -- argument helpers --------------------------------------------------------------------------


def parse_when(value: str) -> float | datetime:
    """ "30m", "2h", "7d" ago, or an ISO time ("2026-11-27T05:00:00Z")."""
    match = _RELATIVE.fullmatch(value.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a duration like 30m, 2h, 7d nor an ISO time") from None


def parse_setting(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not key=value")
    return key.strip(), val.strip()


def _prompt_text(prompt: str | None) -> str:
    if prompt not in (None, "-"):
        return str(prompt)
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("give the prompt as an argument, or pipe it on stdin")
    return sys.stdin.read()


def _read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise UsageError("the passwords differ")
    if not password:
        raise UsageError("the password is empty")
    return password


# The command-line options copied as they are into the call's options.
GENERATION_ARGS: tuple[Literal["model", "system", "max_tokens", "temperature", "top_p", "seed", "priority", "timeout"], ...] = (
    "model",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "priority",
    "timeout",
)
OCR_ARGS: tuple[Literal["model", "resolution", "languages", "pages", "priority", "timeout"], ...] = (
    "model",
    "resolution",
    "languages",
    "pages",
    "priority",
    "timeout",
)


def _generation(args: argparse.Namespace) -> GenerationOptions:
    opts: GenerationOptions = {}
    for name in GENERATION_ARGS:
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if args.stop:
        opts["stop"] = args.stop
    return opts


def _ocr_options(args: argparse.Namespace) -> OcrOptions:
    opts: OcrOptions = {"include_layout": args.layout}
    for name in OCR_ARGS:
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if args.markdown:
        opts["output_format"] = "markdown"
    return opts


# -- commands ----------------------------------------------------------------------------------


def cmd_login(cli: Cli) -> int:
    a = cli.args
    username = a.username or cli.env.get("AIGW_USERNAME", "")
    if not username:
        if a.password_stdin or sys.stdin is None or not sys.stdin.isatty():
            raise UsageError("give --username (or set AIGW_USERNAME)")
        username = input("Username: ").strip()
    info = cli.client.login(username, _read_password(a))
    path = save_login(SavedLogin(info, cli.client.router_address, cli.client.admin_address), cli.env)
    summary = {"username": username, "role": info.role, "expires_at": info.expires_at, "credentials": str(path)}
    cli.emit(summary, lambda: f"Logged in as {username} ({info.role or 'user'}); credentials saved in {path}")
    return EXIT_OK


def cmd_logout(cli: Cli) -> int:
    saved = load_login(cli.env)
    if saved is None:
        cli.note("not logged in")
        return EXIT_OK
    try:
        cli.client.logout()
    except AigwError as err:
        cli.note(f"aigw: the gateway did not revoke the session ({err}); the saved login is removed anyway")
    delete_login(cli.env)
    cli.note(f"Logged out; removed {credentials_path(cli.env)}")
    return EXIT_OK


def cmd_health(cli: Cli) -> int:
    reply = cli.client.health()
    cli.emit(reply, lambda: text.health(reply))
    return EXIT_OK if reply.status == "ok" else EXIT_FAILED


def cmd_models(cli: Cli) -> int:
    names = cli.client.models()
    cli.emit(names, lambda: "\n".join(names) or "(no models)")
    return EXIT_OK


def _stream_chat(cli: Cli, prompt: str, opts: GenerationOptions) -> int:
    last = None
    for delta in cli.client.stream_chat(prompt, **opts):
        last = delta
        if cli.json:
            cli.emit_line(delta)
        elif delta.delta:
            cli.out(delta.delta, end="")
    if not cli.json:
        cli.out()
        if last is not None:
            cli.note(text.chat_summary(last))
    return EXIT_OK


def cmd_chat(cli: Cli) -> int:
    a = cli.args
    prompt, opts = _prompt_text(a.prompt), _generation(a)
    if a.stream:
        return _stream_chat(cli, prompt, opts)
    result = cli.client.chat(prompt, async_mode=a.async_mode, **opts)
    return _show_answer(cli, result, a.async_mode, lambda: text.chat_summary(result))


def _show_answer(cli: Cli, result: ChatResult | OcrResult, async_mode: bool, summary: Callable[[], str]) -> int:
    """Prints a chat or OCR answer: JSON, the request id of an async submit, or the text with a summary."""
    if cli.json:
        cli.dump(result)
    elif async_mode:
        cli.out(result.request_id)
        cli.note(text.submitted(result.request_id, result.status, result.position))
    elif isinstance(result, OcrResult) and len(result.pages) > 1:
        cli.out("\n\n".join(f"{text.page_header(page, result.page_count)}\n{page.text}" for page in result.pages))
        cli.note(summary())
    else:
        cli.out(result.text)
        cli.note(summary())
    return EXIT_OK


def cmd_ocr(cli: Cli) -> int:
    a, opts = cli.args, _ocr_options(cli.args)
    if a.stream:
        for event in cli.client.stream_ocr(a.file, **opts):
            if cli.json:
                cli.emit_line(event)
            elif event.page is not None:
                cli.out(text.page_header(event.page, event.page_count))
                cli.out(event.page.text)
        return EXIT_OK
    result = cli.client.ocr(a.file, async_mode=a.async_mode, **opts)
    return _show_answer(cli, result, a.async_mode, lambda: text.ocr_summary(result))


def cmd_requests_get(cli: Cli) -> int:
    info = cli.client.get_request(cli.args.request_id)
    cli.emit(info, lambda: text.request_info(info))
    return EXIT_OK


def cmd_requests_cancel(cli: Cli) -> int:
    info = cli.client.cancel_request(cli.args.request_id)
    cli.emit(info, lambda: text.request_info(info))
    return EXIT_OK


def cmd_requests_watch(cli: Cli) -> int:
    """Prints each event; exits 0 when the request SUCCEEDED, 1 when it FAILED or was CANCELLED."""
    last = None
    for event in cli.client.watch_request(cli.args.request_id, timeout=cli.args.timeout):
        last = event.request
        if cli.json:
            cli.emit_line(event)
        else:
            cli.out(text.request_event(event))
    if last is None or not last.done:
        last = cli.client.get_request(cli.args.request_id)
    if not cli.json and last.result is not None and last.result.text:
        cli.out()
        cli.out(last.result.text)
    return EXIT_OK if last.state == "SUCCEEDED" else EXIT_FAILED


def cmd_admin_models(cli: Cli) -> int:
    reply = cli.client.list_models()
    cli.emit(reply, lambda: text.models(reply))
    return EXIT_OK


def cmd_admin_start(cli: Cli) -> int:
    reply = cli.client.start_model(cli.args.model, backend=cli.args.backend)
    cli.emit(reply, lambda: f"{reply.outcome} (backend {reply.backend or '-'}, {reply.elapsed_ms:.0f} ms)")
    return EXIT_OK


def cmd_admin_stop(cli: Cli) -> int:
    reply = cli.client.stop_model(cli.args.model, force=cli.args.force)
    cli.emit(reply, lambda: f"{reply.outcome} (backends {', '.join(reply.backends) or '-'}, {reply.elapsed_ms:.0f} ms)")
    return EXIT_OK


def cmd_admin_switch(cli: Cli) -> int:
    reply = cli.client.switch_backend(cli.args.backend, cli.args.model, force=cli.args.force)
    cli.emit(reply, lambda: f"{reply.outcome} ({reply.elapsed_ms:.0f} ms)")
    return EXIT_OK


def cmd_admin_sleep(cli: Cli) -> int:
    reply = cli.client.sleep_backend(cli.args.backend, level=cli.args.level)
    cli.emit(reply, lambda: f"{reply.outcome} ({reply.elapsed_ms:.0f} ms)")
    return EXIT_OK


def cmd_admin_wake(cli: Cli) -> int:
    reply = cli.client.wake_backend(cli.args.backend)
    cli.emit(reply, lambda: f"{reply.outcome} ({reply.elapsed_ms:.0f} ms)")
    return EXIT_OK


def cmd_admin_queue(cli: Cli) -> int:
    reply = cli.client.queue_stats(cli.args.model)
    cli.emit(reply, lambda: text.queue_stats(reply))
    return EXIT_OK


def cmd_admin_series(cli: Cli) -> int:
    reply = cli.client.queue_series(cli.args.model, cli.args.minutes)
    cli.emit(reply, lambda: text.queue_series(reply))
    return EXIT_OK


def cmd_admin_crashes(cli: Cli) -> int:
    a = cli.args
    reply = cli.client.crashes(
        service=a.service, model=a.model, kind=a.kind, request_id=a.request_id, since=a.since, page_size=a.limit
    )
    cli.emit(reply, lambda: text.crashes(reply))
    return EXIT_OK


def cmd_admin_requests(cli: Cli) -> int:
    a = cli.args
    reply = cli.client.requests_history(
        model=a.model, state=a.state, kind=a.kind, client_id=a.client, since=a.since, page_size=a.limit, page_token=a.page_token
    )
    cli.emit(reply, lambda: text.history(reply))
    if reply.next_page_token and not cli.json:
        cli.note(f"more: --page-token {reply.next_page_token}")
    return EXIT_OK


def cmd_admin_config_get(cli: Cli) -> int:
    config = cli.client.get_model_config(cli.args.model)
    cli.emit(config, lambda: text.model_config(config))
    return EXIT_OK


def cmd_admin_config_set(cli: Cli) -> int:
    a = cli.args
    config = cli.client.set_model_config(a.model, dict(a.settings), expected_version=a.expected_version)
    cli.emit(config, lambda: text.model_config(config))
    return EXIT_OK


def cmd_admin_users_list(cli: Cli) -> int:
    items = cli.client.list_users()
    cli.emit(items, lambda: text.users(items))
    return EXIT_OK


def _client_ids(value: str | None) -> list[str] | None:
    return None if value is None else [x.strip() for x in value.split(",") if x.strip()]


def cmd_admin_users_create(cli: Cli) -> int:
    a = cli.args
    user = cli.client.create_user(
        a.username, _read_password(a, confirm=True), role=a.role, allowed_client_ids=_client_ids(a.client_ids) or ()
    )
    cli.emit(user, lambda: text.users([user]))
    return EXIT_OK


def cmd_admin_users_update(cli: Cli) -> int:
    a = cli.args
    password = _read_password(a, confirm=True) if (a.password or a.password_stdin) else None
    user = cli.client.update_user(
        a.username, role=a.role, password=password, disabled=a.disabled, allowed_client_ids=_client_ids(a.client_ids)
    )
    cli.emit(user, lambda: text.users([user]))
    return EXIT_OK


def cmd_admin_users_delete(cli: Cli) -> int:
    cli.client.delete_user(cli.args.username)
    cli.emit({"deleted": cli.args.username}, lambda: f"Deleted user {cli.args.username}")
    return EXIT_OK


def cmd_admin_keys_create(cli: Cli) -> int:
    a = cli.args
    reply = cli.client.create_api_key(subject=a.subject, role=a.role, name=a.name)
    if not cli.json:
        cli.note(f"API key {reply.key.key_id} for {reply.key.subject} ({reply.key.role}); it is shown only now, store it safely:")
    cli.emit(reply, lambda: reply.api_key)
    return EXIT_OK


def cmd_admin_keys_list(cli: Cli) -> int:
    items = cli.client.list_api_keys(subject=cli.args.subject)
    cli.emit(items, lambda: text.api_keys(items))
    return EXIT_OK


def cmd_admin_keys_revoke(cli: Cli) -> int:
    key = cli.client.revoke_api_key(cli.args.key_id)
    cli.emit(key, lambda: f"Revoked API key {key.key_id} of {key.subject}")
    return EXIT_OK


def cmd_admin_autoswitch(cli: Cli) -> int:
    if cli.args.state is not None:
        enabled = cli.client.set_autoswitch(cli.args.state == "on")
        cli.emit({"enabled": enabled}, lambda: f"auto-switch: {'on' if enabled else 'off'}")
        return EXIT_OK
    reply = cli.client.get_autoswitch()
    cli.emit(reply, lambda: text.autoswitch(reply))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Connection and output options, accepted before and after the subcommand."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("connection and output")
    g.add_argument("--address", default=d(None), help="router or gateway host:port (AIGW_GRPC_ADDRESS; 127.0.0.1:50051)")
    g.add_argument(
        "--admin-address", default=d(None), help="admin host:port (AIGW_ADMIN_ADDRESS; default: --address, else :50055)"
    )
    g.add_argument("--token", default=d(None), help="access token (AIGW_TOKEN; default: the saved login)")
    g.add_argument("--api-key", default=d(None), help="API key (AIGW_API_KEY)")
    g.add_argument("--client-id", default=d(None), help="act for this client id (x-client-id; AIGW_CLIENT_ID)")
    g.add_argument("--timeout", type=float, default=d(None), help="seconds to wait (inference: the request's deadline)")
    g.add_argument("--retry", action="store_true", default=d(False), help="retry when rate limited or unavailable")
    g.add_argument("--tls", action="store_true", default=d(False), help="use TLS (AIGW_TLS=1)")
    g.add_argument("--json", action="store_true", default=d(False), help="print JSON (JSON lines for streams)")


class _Parsers:
    """Adds subcommands that all accept the common options."""

    def __init__(self, parent: argparse.ArgumentParser, dest: str) -> None:
        self.sub = parent.add_subparsers(dest=dest, metavar="COMMAND", required=True)

    def add(self, name: str, help_text: str, handler: Callable[[Cli], int] | None = None) -> argparse.ArgumentParser:
        p = self.sub.add_parser(name, help=help_text, description=help_text)
        _common_options(p, suppress=True)
        if handler is not None:
            p.set_defaults(handler=handler)
        return p


def _add_generation(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="the prompt ('-' or none: read stdin)")
    p.add_argument("--model", "-m", help="model (default: the gateway's)")
    p.add_argument("--system", help="system message")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    p.add_argument("--seed", type=int)
    p.add_argument("--priority", choices=PRIORITIES)


def _add_inference(parsers: _Parsers) -> None:
    chat = parsers.add("chat", "chat with a model", cmd_chat)
    _add_generation(chat)
    mode = chat.add_mutually_exclusive_group()
    mode.add_argument("--stream", action="store_true", help="print tokens as they come")
    mode.add_argument("--async", dest="async_mode", action="store_true", help="submit and print the request id")

    ocr = parsers.add("ocr", "recognise the text of an image or PDF", cmd_ocr)
    ocr.add_argument("file", help="image (JPEG, PNG, WebP, BMP, TIFF) or PDF")
    ocr.add_argument("--model", "-m", help="OCR model (default: the gateway's)")
    ocr.add_argument("--resolution", choices=RESOLUTIONS)
    ocr.add_argument("--languages", help="e.g. eng,deu (default: detect)")
    ocr.add_argument("--pages", help="N, N-M or N- (1-based)")
    ocr.add_argument("--layout", action="store_true", help="include lines and words with boxes (JSON)")
    ocr.add_argument("--markdown", action="store_true", help="markdown output where the engine supports it")
    ocr.add_argument("--priority", choices=PRIORITIES)
    mode = ocr.add_mutually_exclusive_group()
    mode.add_argument("--stream", action="store_true", help="print pages as they finish")
    mode.add_argument("--async", dest="async_mode", action="store_true", help="submit and print the request id")

    requests = _Parsers(parsers.add("requests", "a request's status, cancellation and progress"), "requests_command")
    for name, help_text, handler in (
        ("get", "status and result", cmd_requests_get),
        ("cancel", "cancel it", cmd_requests_cancel),
        ("watch", "follow it until it ends (exit 0 when it SUCCEEDED)", cmd_requests_watch),
    ):
        requests.add(name, help_text, handler).add_argument("request_id")


def _add_admin_models(admin: _Parsers) -> None:
    admin.add("models", "models and backends", cmd_admin_models)
    start = admin.add("start", "load a model", cmd_admin_start)
    start.add_argument("model")
    start.add_argument("--backend", default="", help="backend to load it on (default: least busy able one)")
    stop = admin.add("stop", "unload a model", cmd_admin_stop)
    stop.add_argument("model")
    stop.add_argument("--force", action="store_true", help="unload even with work in flight after the drain timeout")
    switch = admin.add("switch", "switch a backend to another model", cmd_admin_switch)
    switch.add_argument("backend")
    switch.add_argument("model")
    switch.add_argument("--force", action="store_true")
    sleep = admin.add("sleep", "put a backend's models to sleep (vLLM sleep mode)", cmd_admin_sleep)
    sleep.add_argument("backend")
    sleep.add_argument("--level", type=int, choices=(1, 2), default=1, help="1 offloads weights to CPU, 2 discards them")
    admin.add("wake", "wake a sleeping backend's models", cmd_admin_wake).add_argument("backend")
    admin.add("queue", "queue numbers of a model", cmd_admin_queue).add_argument("model")
    series = admin.add("series", "a model's queue minute by minute over the last hour", cmd_admin_series)
    series.add_argument("model")
    series.add_argument("--minutes", type=int, help="how many minutes up to now, 1 to 60 (default 60)")
    config = _Parsers(admin.add("config", "a model's dynamic configuration"), "config_command")
    config.add("get", "show it", cmd_admin_config_get).add_argument("model")
    set_ = config.add("set", "change settings, e.g. max_concurrent=4 temperature=0.2", cmd_admin_config_set)
    set_.add_argument("model")
    set_.add_argument("settings", nargs="+", type=parse_setting, metavar="KEY=VALUE")
    set_.add_argument("--expected-version", type=int, help="fail unless the config is still at this version")
    autoswitch = admin.add("autoswitch", "show auto-switching, or turn it on or off", cmd_admin_autoswitch)
    autoswitch.add_argument("state", nargs="?", choices=("on", "off"))


def _add_admin_records(admin: _Parsers) -> None:
    crashes = admin.add("crashes", "the crash log", cmd_admin_crashes)
    crashes.add_argument("--service", default="")
    crashes.add_argument("--model", default="")
    crashes.add_argument("--kind", default="", help="lease_lost, backend_crash, engine_restart, retry, recovery, deadline, …")
    crashes.add_argument("--request-id", default="")
    crashes.add_argument("--since", type=parse_when, help="30m, 2h, 7d or an ISO time")
    crashes.add_argument("--limit", type=int, default=50)
    history = admin.add("requests", "request history", cmd_admin_requests)
    history.add_argument("--model", default="")
    history.add_argument("--state", default="", help="QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED")
    history.add_argument("--kind", default="", choices=("", "chat", "ocr"))
    history.add_argument("--client", default="", help="client id")
    history.add_argument("--since", type=parse_when, help="30m, 2h, 7d or an ISO time")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--page-token", default="")


def _add_admin_identities(admin: _Parsers) -> None:
    users = _Parsers(admin.add("users", "users and roles"), "users_command")
    users.add("list", "list users", cmd_admin_users_list)
    create = users.add("create", "create a user (prompts for the password)", cmd_admin_users_create)
    create.add_argument("username")
    create.add_argument("--role", choices=("user", "admin"), default="user")
    create.add_argument("--client-ids", help="client ids the user may act for, comma-separated")
    create.add_argument("--password-stdin", action="store_true")
    update = users.add("update", "change a user", cmd_admin_users_update)
    update.add_argument("username")
    update.add_argument("--role", choices=("user", "admin"))
    update.add_argument("--client-ids", help="replace the allowed client ids (empty string clears)")
    update.add_argument("--password", action="store_true", help="set a new password (prompted)")
    update.add_argument("--password-stdin", action="store_true")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_const", const=True)
    state.add_argument("--enable", dest="disabled", action="store_const", const=False)
    users.add("delete", "delete a user", cmd_admin_users_delete).add_argument("username")

    keys = _Parsers(admin.add("keys", "API keys"), "keys_command")
    create = keys.add("create", "create an API key (its secret is printed once)", cmd_admin_keys_create)
    create.add_argument("--subject", default="", help="user it acts as (default: you)")
    create.add_argument("--role", default="", choices=("", "user", "admin"))
    create.add_argument("--name", default="", help="description")
    keys.add("list", "list API keys", cmd_admin_keys_list).add_argument("--subject", default="")
    keys.add("revoke", "revoke an API key", cmd_admin_keys_revoke).add_argument("key_id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigw", description="Command line of the aigw AI gateway.", epilog=__doc__.split("\n\n")[1]
    )
    _common_options(parser, suppress=False)
    top = _Parsers(parser, "command")
    login = top.add("login", "log in and save the token", cmd_login)
    login.add_argument("--username", "-u", help="user name (AIGW_USERNAME; prompted when missing)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    top.add("logout", "revoke the saved login and remove it", cmd_logout)
    top.add("health", "the gateway's health", cmd_health)
    top.add("models", "models the gateway serves", cmd_models)
    _add_inference(top)
    admin = _Parsers(top.add("admin", "operate the gateway (admin role)"), "admin_command")
    _add_admin_models(admin)
    _add_admin_records(admin)
    _add_admin_identities(admin)
    return parser


# -- entry point -------------------------------------------------------------------------------


def _report(err: AigwError) -> int:
    sys.stderr.write(f"aigw: error: {err} [{err.code}]\n")
    for field, description in err.field_violations:
        if description != err.message:  # the gateway's message usually is the violation, field first
            sys.stderr.write(f"  {description if description.startswith(f'{field}:') else f'{field}: {description}'}\n")
    if isinstance(err, AuthError) and not isinstance(err, PermissionDenied):
        sys.stderr.write("  (log in with `aigw login`, or set AIGW_TOKEN or AIGW_API_KEY)\n")
    if isinstance(err, AuthError):
        return EXIT_AUTH
    return EXIT_BUSY if isinstance(err, (RateLimited, Unavailable)) else EXIT_FAILED


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _run(cli: Cli) -> int:
    try:
        code: int = cli.args.handler(cli)
        return code
    except AigwError as err:
        return _report(err)
    except (UsageError, ValueError) as exc:
        sys.stderr.write(f"aigw: {exc}\n")
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"aigw: {where}{exc.strerror or exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("\naigw: interrupted\n")
        return 130
    finally:
        cli.close()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Runs one `aigw` command; returns the exit code (the console script exits with it)."""
    parsed = _parse(argv)
    if isinstance(parsed, int):
        return parsed
    return _run(Cli(parsed, os.environ if env is None else env))


if __name__ == "__main__":
    sys.exit(main())
