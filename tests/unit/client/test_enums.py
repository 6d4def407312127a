"""The client's words for enums come from the public protos, and the SDK uses no internal proto package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from aigw.admin.v1 import admin_pb2
from aigw.common.v1 import common_pb2
from aigw_client import enums

CLIENT = Path(__file__).resolve().parents[3] / "client" / "aigw_client"
PUBLIC_PROTO_PACKAGES = {"aigw.common.v1", "aigw.router.v1", "aigw.admin.v1"}


def test_words_follow_the_proto_enums() -> None:
    assert enums.PRIORITIES == ("high", "normal", "low")
    assert enums.RESOLUTIONS == ("tiny", "small", "base", "large", "gundam")
    assert enums.JOB_STATES == ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
    assert len(enums.CRASH_KINDS) == len(admin_pb2.CrashKind.keys()) - 1
    assert "lease_lost" in enums.CRASH_KINDS


def test_names_of_values_and_of_the_unset_value() -> None:
    assert enums.state_name(common_pb2.SUCCEEDED) == "SUCCEEDED"
    assert enums.priority_name(common_pb2.PRIORITY_HIGH) == "high"
    assert enums.resolution_name(common_pb2.RESOLUTION_GUNDAM) == "gundam"
    assert enums.crash_kind_name(admin_pb2.CRASH_KIND_LEASE_LOST) == "lease_lost"
    assert enums.backend_state_name(common_pb2.BACKEND_STATE_UNSPECIFIED) == ""
    assert (enums.state_name(common_pb2.JOB_STATE_UNSPECIFIED), enums.priority_name(common_pb2.PRIORITY_UNSPECIFIED)) == ("", "")


@pytest.mark.parametrize("name", ["lease_lost", "LEASE_LOST", "CRASH_KIND_LEASE_LOST", "Lease_Lost"])
def test_a_value_is_read_from_its_word_or_full_name(name: str) -> None:
    assert enums.enum_value(admin_pb2.CrashKind, name, enums.CRASH_KIND_PREFIX, "kind") == admin_pb2.CRASH_KIND_LEASE_LOST


def test_an_empty_word_is_the_unset_value_and_an_unknown_one_names_the_choices() -> None:
    assert enums.enum_value(common_pb2.JobState, "", "", "state") == common_pb2.JOB_STATE_UNSPECIFIED
    with pytest.raises(ValueError, match=r"state: 'done' is not one of queued, running, succeeded, failed, cancelled"):
        enums.enum_value(common_pb2.JobState, "done", "", "state")


def test_the_sdk_imports_only_public_proto_packages() -> None:
    used: set[str] = set()
    for path in CLIENT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aigw."):
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used.update(alias.name for alias in node.names if alias.name.startswith("aigw."))
    assert "aigw.admin.v1" in used
    assert used <= PUBLIC_PROTO_PACKAGES, sorted(used - PUBLIC_PROTO_PACKAGES)
