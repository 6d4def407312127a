"""Times as the queue keeps them (float seconds since the epoch) and as the store and the protos hold them."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_datetime(t: float) -> datetime:
    """A time as a stored BSON datetime (UTC)."""
    return datetime.fromtimestamp(t, UTC)


def from_datetime(d: datetime | None) -> float:
    """A stored datetime as seconds; 0 when absent (BSON datetimes come back naive, in UTC)."""
    if d is None:
        return 0.0
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def stored_millis(t: float) -> int:
    """A time as the store keeps it (whole milliseconds, as BSON encodes a datetime)."""
    d = to_datetime(t)
    return calendar.timegm(d.utctimetuple()) * 1000 + d.microsecond // 1000


def to_timestamp(t: float) -> Timestamp:
    """A time as a protobuf Timestamp."""
    seconds = int(t)
    return Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))


def set_timestamp(field: Timestamp, t: float) -> None:
    """Sets a Timestamp field of a message to `t` in place (what `CopyFrom(to_timestamp(t))` does, without the copy)."""
    seconds = int(t)
    field.seconds = seconds
    field.nanos = int((t - seconds) * 1e9)


def from_timestamp(ts: Timestamp) -> float:
    """A protobuf Timestamp as seconds."""
    return ts.seconds + ts.nanos / 1e9
