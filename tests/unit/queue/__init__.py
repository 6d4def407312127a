"""Unit tests of the queue domain (no I/O)."""
