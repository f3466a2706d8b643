"""Who is calling, and whether to let a provisioning request through (rate limits, caps)."""
