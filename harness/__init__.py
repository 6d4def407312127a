"""The local development harness: the supervisord launcher behind `make run`, the embedded FerretDB process,
and the in-process mesh that tests and benchmarks start. Kept out of the installed packages."""
