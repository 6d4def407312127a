"""Unit tests of the textgen service."""
