"""The router service of the aigw mesh."""
