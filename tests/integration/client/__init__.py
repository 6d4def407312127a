"""The aigw CLI and health probe as real processes against an in-process gateway stand-in."""
