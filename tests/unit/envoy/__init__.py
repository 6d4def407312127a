"""Offline checks of Envoy's configuration."""
