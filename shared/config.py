"""Reading settings from the environment, with errors that name the variable.

Each service declares its own settings in ``settings.py`` and reads them in ``main``; nothing is
read at import time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path


class SettingsError(Exception):
    """A required setting is missing or malformed; the message names the variable."""


class Env:
    """Typed access to an environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def string(self, name: str, default: str | None = None) -> str:
        """A required string (or ``default``)."""
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is not None:
            return default
        msg = f"missing required setting {name}"
        raise SettingsError(msg)

    def integer(self, name: str, default: int) -> int:
        """An integer."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError as exc:
            msg = f"setting {name} must be an integer, got {raw!r}"
            raise SettingsError(msg) from exc

    def number(self, name: str, default: float) -> float:
        """A number."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError as exc:
            msg = f"setting {name} must be a number, got {raw!r}"
            raise SettingsError(msg) from exc

    def key(self, name: str) -> bytes:
        """A required secret key: base64url of at least 32 bytes."""
        raw = self.string(name)
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError) as exc:
            msg = f"setting {name} must be base64url"
            raise SettingsError(msg) from exc
        if len(key) < 32:  # noqa: PLR2004
            msg = f"setting {name} must hold at least 32 bytes of key"
            raise SettingsError(msg)
        return key

    def path(self, name: str, default: Path | None = None) -> Path:
        """A filesystem path."""
        raw = self._environ.get(name, "").strip()
        if raw:
            return Path(raw)
        if default is not None:
            return default
        msg = f"missing required setting {name}"
        raise SettingsError(msg)
