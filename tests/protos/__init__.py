"""Test-only protos, compiled at test time."""
