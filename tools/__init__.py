"""Developer tools for building and checking the aigw project."""
