"""Connecting to Postgres: pools, the errors that mean "unreachable", where the binaries live."""
