"""Fixtures of these tests: the HTTP peers a test starts end with it."""

from tests.unit.http_peer import close_http_peers

__all__ = ["close_http_peers"]
