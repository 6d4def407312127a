"""Integration tests of the queue service against the embedded FerretDB."""
