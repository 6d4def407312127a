"""Unit tests of the shared engine pieces: supervision backoff, the OpenAI-compatible HTTP client, SSE."""
