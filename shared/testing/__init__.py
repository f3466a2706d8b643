"""Helpers for the test suites: factories of contract objects with sensible defaults."""
