"""Integration tests of the textgen service against real `transformers serve` processes."""
