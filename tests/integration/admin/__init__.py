"""Integration tests of the admin service against the real queue service, FerretDB and backends."""
