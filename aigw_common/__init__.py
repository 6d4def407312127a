"""Shared runtime of the aigw services: config, bootstrap, auth, telemetry, clients."""
