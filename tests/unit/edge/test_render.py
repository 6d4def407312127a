"""The edge's planned JSON rendering against protobuf's MessageToDict, on every message type it can answer with."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from aigw_server.edge.bindings import load_bindings
from aigw_server.edge.render import JsonRenderer
from aigw_server.edge.service import descriptor_set_path
from tests.protos.compile import EdgeTestProtos

F = FieldDescriptor
_SKIPPED_WKT = {"google.protobuf.Any", "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


def expected(msg: Message, pool: DescriptorPool) -> str:
    obj = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, descriptor_pool=pool
    )
    return json.dumps(obj)  # key order included


def _scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.cpp_type
    if kind == F.CPPTYPE_STRING:
        return rng.randbytes(rng.randint(0, 5)) if field.type == F.TYPE_BYTES else rng.choice(["", "a", "héllo", "x" * 9])
    if kind == F.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if kind in (F.CPPTYPE_INT32, F.CPPTYPE_INT64):
        return rng.choice([0, 1, -7, 2**31 - 1] if kind == F.CPPTYPE_INT32 else [0, -1, 2**40, -(2**62)])
    if kind in (F.CPPTYPE_UINT32, F.CPPTYPE_UINT64):
        return rng.choice([0, 3, 2**32 - 1] if kind == F.CPPTYPE_UINT32 else [0, 5, 2**63])
    if kind in (F.CPPTYPE_FLOAT, F.CPPTYPE_DOUBLE):
        return rng.choice([0.0, 0.1, -2.5, 1e300 if kind == F.CPPTYPE_DOUBLE else 3.4e38, float("inf"), float("nan")])
    assert kind == F.CPPTYPE_ENUM
    assert field.enum_type is not None
    numbers = [v.number for v in field.enum_type.values]
    return rng.choice([*numbers, 99]) if not field.enum_type.is_closed else rng.choice(numbers)


def fill(msg: Any, rng: random.Random, depth: int = 0) -> None:
    """Sets about half of the fields, recursively, with values of every shape the type allows."""
    descriptor: Descriptor = msg.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        msg.seconds, msg.nanos = rng.randint(0, 2_000_000_000), rng.choice([0, 1000, 123_456_789])
        return
    if descriptor.full_name == "google.protobuf.Duration":
        msg.seconds, msg.nanos = rng.randint(0, 10_000), rng.choice([0, 500_000_000])
        return
    for field in descriptor.fields:
        if rng.random() < 0.4:
            continue
        sub = field.message_type
        if sub is not None and (sub.full_name in _SKIPPED_WKT or depth >= 3):
            continue
        if sub is not None and sub.GetOptions().map_entry:
            target = getattr(msg, field.name)
            key_field, value_field = sub.fields_by_name["key"], sub.fields_by_name["value"]
            for _ in range(rng.randint(0, 2)):
                key = _scalar(key_field, rng)
                if value_field.message_type is not None:
                    fill(target[key], rng, depth + 1)
                else:
                    target[key] = _scalar(value_field, rng)
            continue
        if field.is_repeated:
            target = getattr(msg, field.name)
            for _ in range(rng.randint(0, 2)):
                if sub is not None:
                    fill(target.add(), rng, depth + 1)
                else:
                    target.append(_scalar(field, rng))
        elif sub is not None:
            fill(getattr(msg, field.name), rng, depth + 1)
            getattr(msg, field.name).SetInParent()
        else:
            setattr(msg, field.name, _scalar(field, rng))


def message_types(descriptor_set: bytes) -> tuple[DescriptorPool, list[type[Message]]]:
    pool, _ = load_bindings(descriptor_set)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    names: list[str] = []

    def walk(prefix: str, messages: Any) -> None:
        for m in messages:
            if not m.options.map_entry:
                names.append(f"{prefix}.{m.name}")
            walk(f"{prefix}.{m.name}", m.nested_type)

    for f in files.file:
        walk(f.package, f.message_type)
    return pool, [message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in names]


def check_all(descriptor_set: bytes, seeds: int) -> int:
    pool, classes = message_types(descriptor_set)
    renderer = JsonRenderer(pool)
    checked = 0
    for cls in classes:
        if cls.DESCRIPTOR.full_name in _SKIPPED_WKT:
            continue
        for seed in range(seeds):
            msg = cls()
            if seed:
                fill(msg, random.Random(seed * 7919 + len(cls.DESCRIPTOR.full_name)))
            assert json.dumps(renderer.render(msg)) == expected(msg, pool), f"{cls.DESCRIPTOR.full_name} seed {seed}"
            checked += 1
    return checked


def test_every_message_of_the_api_renders_as_message_to_dict() -> None:
    assert check_all(descriptor_set_path().read_bytes(), seeds=25) > 25 * 100


def test_every_message_of_the_edge_test_service_renders_as_message_to_dict(edgetest: EdgeTestProtos) -> None:
    """That service has the shapes the API lacks: int64, doubles, maps, bytes."""
    assert check_all(edgetest.descriptor_set, seeds=25) > 25 * 10


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.0, 1e-7])
def test_doubles_are_protobufs_own(edgetest: EdgeTestProtos, value: float) -> None:
    pool, classes = message_types(edgetest.descriptor_set)
    renderer = JsonRenderer(pool)
    for cls in classes:
        doubles = [f for f in cls.DESCRIPTOR.fields if f.cpp_type == F.CPPTYPE_DOUBLE and not f.is_repeated]
        for field in doubles:
            msg = cls()
            setattr(msg, field.name, value)
            assert json.dumps(renderer.render(msg)) == expected(msg, pool)
