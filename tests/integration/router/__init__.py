"""The router through real in-process servers: queue on FerretDB, textgen on a fast upstream."""
