"""Tests of the Python client, its credentials file, the aigw CLI and the health probe."""
