"""The admin API's own messages and the queue's look-alikes map onto each other without loss: a message filled in
every field maps to one with the same wire form, unset fields stay unset, and the two definitions keep the same
shape (field numbers, names, types), so clients of admin.proto see what they saw when it borrowed the queue's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google._upb import _message as upb
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw.queue.v1 import queue_pb2
from aigw_server.admin import queue_mapping

# The protobuf stubs type a message's descriptors as either the pure-Python or the upb (C) kind.
AnyDescriptor = Descriptor | upb.Descriptor
AnyFieldDescriptor = FieldDescriptor | upb.FieldDescriptor

MIRRORED: list[tuple[type[Message], type[Message]]] = [
    (queue_pb2.GetQueueStatsResponse, admin_pb2.GetQueueStatsResponse),
    (queue_pb2.Percentiles, admin_pb2.Percentiles),
    (queue_pb2.GetQueueSeriesResponse, admin_pb2.GetQueueSeriesResponse),
    (queue_pb2.QueueMinute, admin_pb2.QueueMinute),
    (queue_pb2.SeriesPercentiles, admin_pb2.SeriesPercentiles),
    (queue_pb2.ListCrashesRequest, admin_pb2.ListCrashesRequest),
    (queue_pb2.ListCrashesResponse, admin_pb2.ListCrashesResponse),
    (queue_pb2.CrashEvent, admin_pb2.CrashEvent),
    (queue_pb2.ModelConfig, admin_pb2.ModelConfig),
    (queue_pb2.ModelConfigPatch, admin_pb2.ModelConfigPatch),
    (queue_pb2.SwitchDecision, admin_pb2.SwitchDecision),
]

# (mapping, what it reads): each maps a fully filled message to one with the same bytes on the wire.
LOSSLESS: list[tuple[Callable[[Any], Message], type[Message]]] = [
    (queue_mapping.queue_stats, queue_pb2.GetQueueStatsResponse),
    (queue_mapping.queue_series, queue_pb2.GetQueueSeriesResponse),
    (queue_mapping.crash_filter, admin_pb2.ListCrashesRequest),
    (queue_mapping.crash_page, queue_pb2.ListCrashesResponse),
    (queue_mapping.history_filter, admin_pb2.ListRequestsRequest),
    (queue_mapping.history_page, queue_pb2.ListJobsResponse),
    (queue_mapping.model_config, queue_pb2.ModelConfig),
    (queue_mapping.model_config_patch, admin_pb2.ModelConfigPatch),
    (queue_mapping.switch_decision, queue_pb2.SwitchDecision),
]


def shape(descriptor: AnyDescriptor) -> dict[int, tuple[str, int, str, bool, bool]]:
    """Each field's name, type, message or enum type (by short name or, for a map entry, its own shape), repetition
    and explicit presence, by number."""
    return {f.number: (f.name, f.type, nested_type(f), f.is_repeated, f.has_presence) for f in descriptor.fields}


def nested_type(field: AnyFieldDescriptor) -> str:
    if field.enum_type is not None:
        return field.enum_type.full_name.replace("aigw.queue.v1.", "aigw.admin.v1.")
    nested = field.message_type
    if nested is None:
        return ""
    if nested.GetOptions().map_entry:
        return str(shape(nested))
    return str(nested.full_name).replace("aigw.queue.v1.", "aigw.admin.v1.")


def filled(cls: type[Message]) -> Message:
    """A message with every field set to something other than its default, sub-messages included."""
    message = cls()
    fill(message, depth=0)
    return message


def fill(message: Message, depth: int) -> None:
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            if value_field.message_type is None:
                value[scalar(key_field)] = scalar(value_field)
        elif field.is_repeated and field.message_type is not None:
            if depth < 3:
                fill(value.add(), depth + 1)
        elif field.is_repeated:
            value.extend([scalar(field), scalar(field)])
        elif field.message_type is not None:
            if depth < 3:
                fill(value, depth + 1)
                value.SetInParent()
        else:
            setattr(message, field.name, scalar(field))


def scalar(field: AnyFieldDescriptor) -> Any:
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-value"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return field.name.encode()
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 2.5
    return 7


@pytest.mark.parametrize(("queue_type", "admin_type"), MIRRORED, ids=lambda t: t.__name__)
def test_admin_copies_have_the_queue_types_shape(queue_type: type[Message], admin_type: type[Message]) -> None:
    assert shape(admin_type.DESCRIPTOR) == shape(queue_type.DESCRIPTOR)


def test_admin_history_filter_is_the_queue_job_filter_without_the_subject() -> None:
    queue_shape = shape(queue_pb2.ListJobsRequest.DESCRIPTOR)
    assert queue_shape.pop(9)[0] == "subject"
    assert shape(admin_pb2.ListRequestsRequest.DESCRIPTOR) == queue_shape


def test_admin_proto_borrows_no_internal_package() -> None:
    imports = [f.name for f in admin_pb2.DESCRIPTOR.dependencies]
    assert not [name for name in imports if name.startswith("aigw/") and not name.startswith("aigw/common/")], imports


@pytest.mark.parametrize(("mapping", "source_type"), LOSSLESS, ids=lambda m: getattr(m, "__name__", ""))
def test_a_filled_message_maps_to_the_same_wire_form(mapping: Callable[[Any], Message], source_type: type[Message]) -> None:
    source = filled(source_type)
    mapped = mapping(source)
    assert type(mapped) is not source_type
    assert mapped.SerializeToString(deterministic=True) == source.SerializeToString(deterministic=True)


@pytest.mark.parametrize(("mapping", "source_type"), LOSSLESS, ids=lambda m: getattr(m, "__name__", ""))
def test_an_empty_message_maps_to_an_empty_one(mapping: Callable[[Any], Message], source_type: type[Message]) -> None:
    assert mapping(source_type()).SerializeToString() == b""


def test_a_patch_keeps_an_explicit_zero_apart_from_an_unset_field() -> None:
    patch = queue_mapping.model_config_patch(admin_pb2.ModelConfigPatch(max_waiting=0, enabled=False))
    assert (patch.HasField("max_waiting"), patch.HasField("enabled")) == (True, True)
    assert (patch.HasField("max_concurrent"), patch.HasField("default_params")) == (False, False)


def test_an_unknown_crash_kind_passes_through_as_on_the_wire() -> None:
    query = queue_mapping.crash_filter(admin_pb2.ListCrashesRequest(kind=99))  # type: ignore[arg-type]  # an out-of-range number, as a client may send
    assert query.kind == 99


def test_a_user_shows_everything_but_its_password_hash() -> None:
    user = queue_pb2.User(username="ada", role="admin", password_hash="$argon2id$x", disabled=True, allowed_client_ids=["a"])
    user.created_at.seconds = 1000
    user.updated_at.seconds = 2000
    info = queue_mapping.user_info(user)
    assert info == admin_pb2.UserInfo(
        username="ada", role="admin", disabled=True, allowed_client_ids=["a"], created_at=user.created_at
    )


def test_an_api_key_shows_everything_but_its_secret_hash_and_leaves_unset_times_unset() -> None:
    key = queue_pb2.ApiKey(key_id="k1", secret_hash="ff", subject="ada", role="user", name="ci")
    key.created_at.seconds = 1000
    info = queue_mapping.api_key_info(key)
    assert info == admin_pb2.ApiKeyInfo(key_id="k1", subject="ada", role="user", name="ci", created_at=key.created_at)
    assert not info.HasField("last_used_at")
    assert not info.HasField("revoked_at")
    key.revoked_at.seconds = 3000
    assert queue_mapping.api_key_info(key).revoked_at.seconds == 3000


def test_history_jobs_are_carried_whole() -> None:
    job = common_pb2.Job(request_id="r1", model="m", state=common_pb2.FAILED)
    page = queue_mapping.history_page(queue_pb2.ListJobsResponse(jobs=[job], next_page_token="t"))
    assert (list(page.requests), page.next_page_token) == ([job], "t")


def test_creation_times_are_always_present_as_operators_have_always_seen_them() -> None:
    assert queue_mapping.user_info(queue_pb2.User(username="ada")).HasField("created_at")
    assert queue_mapping.api_key_info(queue_pb2.ApiKey(key_id="k1")).HasField("created_at")
