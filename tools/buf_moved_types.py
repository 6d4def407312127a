"""Filters `buf breaking --error-format json` (stdin): drops a FIELD_SAME_TYPE finding only where admin.proto's field
now names its own copy of an aigw.queue.v1 type whose wire and JSON forms are the same (field numbers, names, types,
cardinality and enum values, nested types compared the same way); prints every other finding and fails on any.

Usage: buf breaking ... --error-format json | tools/buf_moved_types.py NEW.binpb
"""

from __future__ import annotations

import json
import re
import sys

from google.protobuf import descriptor_pb2

ADMIN_PROTO = "aigw/admin/v1/admin.proto"
FROM_PACKAGE, TO_PACKAGE = "aigw.queue.v1", "aigw.admin.v1"
MOVED = re.compile(r'changed type from "' + re.escape(FROM_PACKAGE) + r'\.(\w+)" to "' + re.escape(TO_PACKAGE) + r'\.(\w+)"')

Shape = tuple[object, ...]
Types = dict[str, descriptor_pb2.DescriptorProto | descriptor_pb2.EnumDescriptorProto]


def load(path: str) -> Types:
    """Every top-level message and enum of the descriptor set, by full name."""
    files = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as handle:
        files.ParseFromString(handle.read())
    types: Types = {}
    for file in files.file:
        for message in file.message_type:
            types[f"{file.package}.{message.name}"] = message
        for enum in file.enum_type:
            types[f"{file.package}.{enum.name}"] = enum
    return types


def shape(types: Types, name: str) -> Shape:
    """What a type looks like on the wire and in JSON, with nested aigw.queue.v1/aigw.admin.v1 types expanded."""
    found = types[name]
    if isinstance(found, descriptor_pb2.EnumDescriptorProto):
        return ("enum", tuple((v.name, v.number) for v in found.value))
    fields: list[Shape] = []
    for field in found.field:
        nested = field.type_name.lstrip(".")
        if nested.startswith(name + "."):
            nested_shape: object = ("map", tuple((f.name, f.number, f.type, f.type_name) for f in _entry(found, nested).field))
        elif nested.startswith((FROM_PACKAGE + ".", TO_PACKAGE + ".")):
            nested_shape = shape(types, nested)
        else:
            nested_shape = nested
        fields.append((field.number, field.name, field.json_name, field.type, field.label, field.proto3_optional, nested_shape))
    return ("message", frozenset(fields))


def _entry(message: descriptor_pb2.DescriptorProto, full_name: str) -> descriptor_pb2.DescriptorProto:
    short = full_name.rsplit(".", 1)[-1]
    return next(n for n in message.nested_type if n.name == short)


def allowed(finding: dict[str, object], types: Types) -> bool:
    """A field of admin.proto moved to admin's own copy of the queue type it named, the same on the wire and in JSON."""
    if finding.get("path") != ADMIN_PROTO or finding.get("type") != "FIELD_SAME_TYPE":
        return False
    moved = MOVED.search(str(finding.get("message", "")))
    if moved is None or moved.group(1) != moved.group(2):
        return False
    old, new = f"{FROM_PACKAGE}.{moved.group(1)}", f"{TO_PACKAGE}.{moved.group(2)}"
    return old in types and new in types and shape(types, old) == shape(types, new)


def main() -> int:
    types = load(sys.argv[1])
    left = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        finding = json.loads(line)
        if not allowed(finding, types):
            left += 1
            print(f"{finding['path']}:{finding.get('start_line', 0)}: {finding['type']}: {finding['message']}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
