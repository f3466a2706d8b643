"""The event log on the platform Postgres: the source of truth, its projections and its relay."""
