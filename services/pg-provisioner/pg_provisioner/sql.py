"""Quoting for the DDL this service writes: Postgres takes no parameters in DDL."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """``name`` as a quoted identifier (names are tenant or pool names, checked; quoted anyway)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as a quoted string literal."""
    return "'" + value.replace("'", "''") + "'"
