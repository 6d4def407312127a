"""Unit tests of the embedded REST edge."""
