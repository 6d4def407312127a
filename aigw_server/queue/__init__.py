"""The queue service of the aigw mesh."""
