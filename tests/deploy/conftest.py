"""Fixtures of the deploy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.compose_files import rendered


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    """compose.yaml as ``docker-compose config`` renders it with .env.example."""
    return rendered(tmp_path)
