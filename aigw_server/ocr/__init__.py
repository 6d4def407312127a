"""The ocr service of the aigw mesh."""
