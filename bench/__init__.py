"""Benchmarks: scripts that measure latency against real servers (never asserted in tests)."""
