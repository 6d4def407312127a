"""Builds every call of the aigw client (request proto + reply conversion), shared by the sync and asyncio clients."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, cast

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from aigw_client.enums import CRASH_KIND_PREFIX, JOB_KIND_PREFIX, RESOLUTION_PREFIX, enum_value
from aigw_client.rpc import DEADLINE_GRACE_SECONDS, MAX_MESSAGE_BYTES, Rpc
from aigw_client.values import ChatDelta, ChatResult, OcrPageEvent, OcrResult, RequestEvent, RequestInfo, TokenInfo

ChatInput = Mapping[str, str] | common_pb2.ChatMessage
Document = str | os.PathLike[str] | bytes
When = datetime | float | None


class GenerationOptions(TypedDict, total=False):
    """Options of chat calls (all optional)."""

    model: str
    system: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: Sequence[str]
    seed: int
    priority: str
    idempotency_key: str
    timeout: float


class OcrOptions(TypedDict, total=False):
    """Options of OCR calls (all optional). `pages` is "2", "1-3", "4-" or (first, last)."""

    model: str
    resolution: str
    languages: str | Sequence[str]
    pages: str | int | tuple[int, int]
    output_format: str
    include_layout: bool
    priority: str
    idempotency_key: str
    timeout: float


def _deadline(timeout: float | None) -> float | None:
    """The gRPC deadline of a waiting inference call: the job's timeout plus a grace, so the gateway's own error comes first."""
    return timeout + DEADLINE_GRACE_SECONDS if timeout else None


def build_messages(prompt: str | None, messages: Sequence[ChatInput] | None, system: str | None) -> list[common_pb2.ChatMessage]:
    """The conversation: `system` first, then `messages`, then `prompt` as the last user message."""
    out = [common_pb2.ChatMessage(role="system", content=system)] if system else []
    for m in messages or ():
        if isinstance(m, common_pb2.ChatMessage):
            out.append(m)
        else:
            out.append(common_pb2.ChatMessage(role=m.get("role", "user"), content=m.get("content", ""), name=m.get("name", "")))
    if prompt is not None:
        out.append(common_pb2.ChatMessage(role="user", content=prompt))
    if not any(m.role != "system" for m in out):
        raise ValueError("chat needs a prompt or at least one non-system message")
    return out


# Generation options sent only when given: the gateway's defaults (or the model's) apply otherwise.
OPTIONAL_GENERATION_FIELDS: tuple[Literal["max_tokens", "temperature", "top_p", "seed"], ...] = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
)


def _generation_fields(opts: GenerationOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": opts.get("model", ""),
        "stop": list(opts.get("stop", ())),
        "priority": opts.get("priority", "").lower(),
        "idempotency_key": opts.get("idempotency_key", ""),
        "timeout_seconds": opts.get("timeout") or 0.0,
    }
    for name in OPTIONAL_GENERATION_FIELDS:
        if opts.get(name) is not None:
            fields[name] = opts[name]
    return fields


def chat(prompt: str | None, messages: Sequence[ChatInput] | None, async_mode: bool, opts: GenerationOptions) -> Rpc[ChatResult]:
    fields = _generation_fields(opts)
    request = router_pb2.ChatRequest(
        messages=build_messages(prompt, messages, opts.get("system")), async_mode=async_mode, **fields
    )
    deadline: float | Literal["default"] | None = "default" if async_mode else _deadline(opts.get("timeout"))
    return Rpc("router", "Chat", request, ChatResult.from_response, request.priority, deadline)


def stream_chat(prompt: str | None, messages: Sequence[ChatInput] | None, opts: GenerationOptions) -> Rpc[ChatDelta]:
    fields = _generation_fields(opts)
    request = router_pb2.StreamChatRequest(messages=build_messages(prompt, messages, opts.get("system")), **fields)
    return Rpc("router", "StreamChat", request, ChatDelta.from_event, request.priority, _deadline(opts.get("timeout")))


def read_document(document: Document) -> bytes:
    """The bytes of a document given as bytes or as a file path."""
    data = bytes(document) if isinstance(document, (bytes, bytearray, memoryview)) else Path(document).read_bytes()
    if not data:
        raise ValueError("the document is empty")
    if len(data) > MAX_MESSAGE_BYTES - 4096:
        raise ValueError(f"the document is {len(data)} bytes, more than one call can carry ({MAX_MESSAGE_BYTES} bytes)")
    return data


def parse_pages(pages: str | int | tuple[int, int] | None) -> tuple[int, int]:
    """(first, last) 1-based pages from "2", "1-3", "4-" (to the end) or a tuple; (0, 0) means all."""
    if pages is None or pages == "":
        return 0, 0
    if isinstance(pages, int):
        first, last = pages, pages
    elif isinstance(pages, tuple):
        first, last = pages
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?", pages)
        if match is None:
            raise ValueError(f"pages: {pages!r} is not N, N-M or N- (1-based)")
        first = int(match.group(1))
        last = int(match.group(3)) if match.group(3) else (0 if match.group(2) else first)
    if first < 1 or last < 0 or (last and last < first):
        raise ValueError(f"pages: {pages!r} is not a 1-based range with first <= last")
    return first, last


def parse_languages(languages: str | Sequence[str] | None) -> list[str]:
    """["eng", "deu"] from "eng,deu" or a list; empty means auto-detect."""
    items = languages.replace("+", ",").split(",") if isinstance(languages, str) else list(languages or ())
    return [x.strip() for x in items if x.strip()]


def _ocr_fields(document: Document, opts: OcrOptions) -> dict[str, Any]:
    first, last = parse_pages(opts.get("pages"))
    return {
        "document": read_document(document),
        "model": opts.get("model", ""),
        "resolution": opts.get("resolution", "").lower(),
        "languages": parse_languages(opts.get("languages")),
        "first_page": first,
        "last_page": last,
        "output_format": opts.get("output_format", "").lower(),
        "include_layout": opts.get("include_layout", False),
        "priority": opts.get("priority", "").lower(),
        "idempotency_key": opts.get("idempotency_key", ""),
        "timeout_seconds": opts.get("timeout") or 0.0,
    }


def ocr(document: Document, async_mode: bool, opts: OcrOptions) -> Rpc[OcrResult]:
    request = router_pb2.OcrRequest(async_mode=async_mode, **_ocr_fields(document, opts))
    deadline: float | Literal["default"] | None = "default" if async_mode else _deadline(opts.get("timeout"))
    return Rpc("router", "Ocr", request, OcrResult.from_response, request.priority, deadline)


def stream_ocr(document: Document, opts: OcrOptions) -> Rpc[OcrPageEvent]:
    request = router_pb2.StreamOcrRequest(**_ocr_fields(document, opts))
    return Rpc("router", "StreamOcr", request, OcrPageEvent.from_event, request.priority, _deadline(opts.get("timeout")))


def _job(reply: router_pb2.GetRequestResponse | router_pb2.CancelRequestResponse) -> RequestInfo:
    return RequestInfo.from_job(reply.request)


def get_request(request_id: str) -> Rpc[RequestInfo]:
    return Rpc("router", "GetRequest", router_pb2.GetRequestRequest(request_id=request_id), _job)


def cancel_request(request_id: str) -> Rpc[RequestInfo]:
    return Rpc("router", "CancelRequest", router_pb2.CancelRequestRequest(request_id=request_id), _job)


def watch_request(request_id: str, timeout: float | None) -> Rpc[RequestEvent]:
    request = router_pb2.WatchRequestRequest(request_id=request_id)
    return Rpc("router", "WatchRequest", request, RequestEvent.from_event, deadline=timeout)


def health() -> Rpc[router_pb2.GetHealthResponse]:
    return Rpc("router", "GetHealth", router_pb2.GetHealthRequest(), _health, authenticated=False)


def served_models() -> Rpc[list[str]]:
    return Rpc("router", "ListModels", router_pb2.ListModelsRequest(), lambda r: [m.id for m in r.data])


def _health(reply: router_pb2.GetHealthResponse) -> router_pb2.GetHealthResponse:
    return reply


R = TypeVar("R", bound=Message)


def admin(method: str, request: Message, reply: type[R]) -> Rpc[R]:
    """An admin call whose reply (of type `reply`) is returned as the proto itself."""
    return Rpc("admin", method, request, lambda r: cast(R, r))


def login(username: str, password: str) -> Rpc[TokenInfo]:
    request = admin_pb2.IssueTokenRequest(grant_type="password", username=username, password=password)
    return Rpc("admin", "IssueToken", request, lambda r: TokenInfo.from_response(r, username), authenticated=False)


def logout(refresh_token: str) -> Rpc[int]:
    request = admin_pb2.RevokeTokenRequest(refresh_token=refresh_token)
    return Rpc("admin", "RevokeToken", request, lambda r: int(r.revoked), authenticated=False)


def timestamp(when: When) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from a datetime (naive means UTC) or Unix seconds."""
    if when is None:
        return None
    ts = timestamp_pb2.Timestamp()
    if isinstance(when, datetime):
        ts.FromDatetime(when)
    else:
        ts.FromNanoseconds(int(when * 1e9))
    return ts


def crashes(filters: Mapping[str, Any]) -> Rpc[admin_pb2.ListCrashesResponse]:
    request = admin_pb2.ListCrashesRequest(
        service=filters.get("service", ""),
        model=filters.get("model", ""),
        request_id=filters.get("request_id", ""),
        kind=enum_value(admin_pb2.CrashKind, filters.get("kind", ""), CRASH_KIND_PREFIX, "kind"),
        since=timestamp(filters.get("since")),
        until=timestamp(filters.get("until")),
        page_size=filters.get("page_size", 0),
        page_token=filters.get("page_token", ""),
    )
    return admin("ListCrashes", request, admin_pb2.ListCrashesResponse)


def requests_history(filters: Mapping[str, Any]) -> Rpc[admin_pb2.ListRequestsResponse]:
    request = admin_pb2.ListRequestsRequest(
        model=filters.get("model", ""),
        state=enum_value(common_pb2.JobState, filters.get("state", ""), "", "state"),
        kind=enum_value(common_pb2.JobKind, filters.get("kind", ""), JOB_KIND_PREFIX, "kind"),
        client_id=filters.get("client_id", ""),
        since=timestamp(filters.get("since")),
        until=timestamp(filters.get("until")),
        page_size=filters.get("page_size", 0),
        page_token=filters.get("page_token", ""),
    )
    return admin("ListRequests", request, admin_pb2.ListRequestsResponse)


PARAM_FIELDS = frozenset(common_pb2.GenerationParams.DESCRIPTOR.fields_by_name)
CONFIG_ALIASES = {"timeout": "timeout_seconds", "resolution": "default_resolution"}


def _coerce(fd: FieldDescriptor, value: Any, key: str) -> Any:
    if fd.is_repeated:
        items = value.split(",") if isinstance(value, str) else list(value)
        return [x for x in items if x != ""]
    if fd.enum_type is not None:
        return enum_value(common_pb2.Resolution, str(value), RESOLUTION_PREFIX, key)
    if not isinstance(value, str):
        return value
    try:
        if fd.type == FieldDescriptor.TYPE_BOOL:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes", "on")
        if fd.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            return int(value)
        return float(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a valid value") from None


def config_patch(current: admin_pb2.ModelConfig, changes: Mapping[str, Any]) -> admin_pb2.ModelConfigPatch:
    """A patch from changes like {"max_concurrent": "4", "temperature": 0.2, "default_params.stop": "###"}.

    Generation parameters (bare or as `default_params.<name>`) are merged into the current defaults,
    because the gateway replaces the defaults as a whole.
    """
    patch = admin_pb2.ModelConfigPatch()
    params = common_pb2.GenerationParams()
    params.CopyFrom(current.default_params)
    params_changed = False
    for raw_key, value in changes.items():
        key = CONFIG_ALIASES.get(raw_key, raw_key).removeprefix("default_params.")
        if key in PARAM_FIELDS:
            fd = params.DESCRIPTOR.fields_by_name[key]
            coerced = _coerce(fd, value, raw_key)
            if fd.is_repeated:
                del getattr(params, key)[:]
                getattr(params, key).extend(coerced)
            else:
                setattr(params, key, coerced)
            params_changed = True
        elif key in patch.DESCRIPTOR.fields_by_name and key != "default_params":
            setattr(patch, key, _coerce(patch.DESCRIPTOR.fields_by_name[key], value, raw_key))
        else:
            known = sorted({*patch.DESCRIPTOR.fields_by_name, *PARAM_FIELDS} - {"default_params"})
            raise ValueError(f"{raw_key}: unknown setting (known: {', '.join(known)})")
    if params_changed:
        patch.default_params.CopyFrom(params)
    return patch


def update_model_config(
    model: str, current: admin_pb2.ModelConfig, changes: Mapping[str, Any], expected_version: int | None
) -> Rpc[admin_pb2.ModelConfig]:
    version = current.version if expected_version is None else expected_version
    request = admin_pb2.UpdateModelConfigRequest(model=model, expected_version=version, patch=config_patch(current, changes))
    return Rpc("admin", "UpdateModelConfig", request, lambda r: r.config)


def get_model_config(model: str) -> Rpc[admin_pb2.ModelConfig]:
    return Rpc("admin", "GetModelConfig", admin_pb2.GetModelConfigRequest(model=model), lambda r: r.config)


def update_user(
    username: str, role: str | None, password: str | None, disabled: bool | None, allowed_client_ids: Sequence[str] | None
) -> Rpc[admin_pb2.UserInfo]:
    request = admin_pb2.UpdateUserRequest(username=username, role=role, password=password, disabled=disabled)
    if allowed_client_ids is not None:
        request.set_allowed_client_ids = True
        request.allowed_client_ids.extend(allowed_client_ids)
    return Rpc("admin", "UpdateUser", request, _user)


def _user(reply: admin_pb2.CreateUserResponse | admin_pb2.UpdateUserResponse) -> admin_pb2.UserInfo:
    return reply.user


def list_users() -> Rpc[list[admin_pb2.UserInfo]]:
    return Rpc("admin", "ListUsers", admin_pb2.ListUsersRequest(), lambda r: list(r.users))


def create_user(username: str, password: str, role: str, allowed_client_ids: Sequence[str]) -> Rpc[admin_pb2.UserInfo]:
    request = admin_pb2.CreateUserRequest(username=username, password=password, role=role, allowed_client_ids=allowed_client_ids)
    return Rpc("admin", "CreateUser", request, _user)


def list_api_keys(subject: str) -> Rpc[list[admin_pb2.ApiKeyInfo]]:
    return Rpc("admin", "ListApiKeys", admin_pb2.ListApiKeysRequest(subject=subject), lambda r: list(r.keys))


def _key(reply: admin_pb2.RevokeApiKeyResponse) -> admin_pb2.ApiKeyInfo:
    return reply.key


def revoke_api_key(key_id: str) -> Rpc[admin_pb2.ApiKeyInfo]:
    return Rpc("admin", "RevokeApiKey", admin_pb2.RevokeApiKeyRequest(key_id=key_id), _key)


def set_autoswitch(enabled: bool) -> Rpc[bool]:
    return Rpc("admin", "SetAutoSwitch", admin_pb2.SetAutoSwitchRequest(enabled=enabled), lambda r: bool(r.enabled))


def list_models() -> Rpc[admin_pb2.ListModelsResponse]:
    return admin("ListModels", admin_pb2.ListModelsRequest(), admin_pb2.ListModelsResponse)


def start_model(model: str, backend: str) -> Rpc[admin_pb2.StartModelResponse]:
    return admin("StartModel", admin_pb2.StartModelRequest(model=model, backend=backend), admin_pb2.StartModelResponse)


def stop_model(model: str, force: bool) -> Rpc[admin_pb2.StopModelResponse]:
    return admin("StopModel", admin_pb2.StopModelRequest(model=model, force=force), admin_pb2.StopModelResponse)


def switch_backend(backend: str, model: str, force: bool) -> Rpc[admin_pb2.SwitchBackendResponse]:
    request = admin_pb2.SwitchBackendRequest(backend=backend, model=model, force=force)
    return admin("SwitchBackend", request, admin_pb2.SwitchBackendResponse)


def sleep_backend(backend: str, level: int) -> Rpc[admin_pb2.SleepBackendResponse]:
    request = admin_pb2.SleepBackendRequest(backend=backend, level=level)
    return admin("SleepBackend", request, admin_pb2.SleepBackendResponse)


def wake_backend(backend: str) -> Rpc[admin_pb2.WakeBackendResponse]:
    return admin("WakeBackend", admin_pb2.WakeBackendRequest(backend=backend), admin_pb2.WakeBackendResponse)


def queue_stats(model: str) -> Rpc[admin_pb2.GetQueueStatsResponse]:
    return admin("GetQueueStats", admin_pb2.GetQueueStatsRequest(model=model), admin_pb2.GetQueueStatsResponse)


def queue_series(model: str, minutes: int | None) -> Rpc[admin_pb2.GetQueueSeriesResponse]:
    request = admin_pb2.GetQueueSeriesRequest(model=model, minutes=minutes)
    return admin("GetQueueSeries", request, admin_pb2.GetQueueSeriesResponse)


def delete_user(username: str) -> Rpc[admin_pb2.DeleteUserResponse]:
    return admin("DeleteUser", admin_pb2.DeleteUserRequest(username=username), admin_pb2.DeleteUserResponse)


def create_api_key(subject: str, role: str, name: str) -> Rpc[admin_pb2.CreateApiKeyResponse]:
    request = admin_pb2.CreateApiKeyRequest(subject=subject, role=role, name=name)
    return admin("CreateApiKey", request, admin_pb2.CreateApiKeyResponse)


def get_autoswitch() -> Rpc[admin_pb2.GetAutoSwitchResponse]:
    return admin("GetAutoSwitch", admin_pb2.GetAutoSwitchRequest(), admin_pb2.GetAutoSwitchResponse)
