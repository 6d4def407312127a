"""Tests of the aigw mesh."""
