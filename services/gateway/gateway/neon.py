"""Neon-compatible claimable Postgres API (`/api/v1/database`), the same pipeline as /db/new."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler

NEON_ROUTES: list[HTTPRouteHandler] = []
