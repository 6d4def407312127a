"""Unit tests of the router's domain: auth flow, rate limit, validation, OpenAI mapping, backend choice."""
