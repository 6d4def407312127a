"""The admin service of the aigw mesh."""
