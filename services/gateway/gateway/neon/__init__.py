"""The Neon-compatible claimable Postgres API (``/api/v1/database``)."""
