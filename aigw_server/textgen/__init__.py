"""The textgen service of the aigw mesh."""
