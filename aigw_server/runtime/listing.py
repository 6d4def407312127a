"""Checks on history listings (crash log, requests): page sizes and time ranges."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from aigw_server.runtime.errors import InvalidArgument

MAX_PAGE_SIZE = 500


def check_listing(page_size: int, since: timestamp_pb2.Timestamp | None, until: timestamp_pb2.Timestamp | None) -> None:
    """INVALID_ARGUMENT for a page size outside 0..500 or a time range that ends before it starts."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size: must be between 0 (the default, 50) and {MAX_PAGE_SIZE}", field="page_size")
    if since is not None and until is not None and until.ToNanoseconds() <= since.ToNanoseconds():
        raise InvalidArgument("until: must be after since", field="until")
