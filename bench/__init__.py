"""Benchmarks of the gateway and the fast OpenAI-compatible upstream they run against."""
