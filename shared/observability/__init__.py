"""Logs, metrics, traces and health checks: what every service tells its operators."""
