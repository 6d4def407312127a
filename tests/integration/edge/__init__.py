"""Integration tests of the embedded REST edge in front of a real gRPC server."""
