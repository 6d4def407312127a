"""Unit tests of the ocr service's domain: documents, languages, modes, engines."""
