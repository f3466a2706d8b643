"""Writing a new resource's connection settings into a ``.env`` file, like ``npx get-db``.

The settings go in as one block: comment lines (what it is, when it expires, how to claim it)
and then ``KEY=value`` lines. Everything else in the file is kept as it was. A key that is
already set is never overwritten unless the caller forces it; then the old block is replaced
where it stood.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Every comment line this module writes starts with this, so a forced rewrite can drop them.
COMMENT_MARK = "# spinup:"

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
# Values with these characters are double-quoted so every .env reader sees the same value.
_NEEDS_QUOTES = re.compile(r"[\s#\"'$\\`]")


class KeyExistsError(Exception):
    """The file already sets some of the keys and overwriting was not asked for."""

    def __init__(self, path: Path, keys: list[str]) -> None:
        self.path = path
        self.keys = keys
        super().__init__(f"{path} already sets {', '.join(keys)}")


def quoted(value: str) -> str:
    """``value`` as it should appear after ``KEY=`` in a ``.env`` file."""
    if not _NEEDS_QUOTES.search(value):
        return value
    if "'" not in value:
        # Single quotes are literal for shells, python-dotenv and docker compose alike.
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def assigned_key(line: str) -> str | None:
    """The key a ``.env`` line sets (``KEY=…`` or ``export KEY=…``), else ``None``."""
    match = _ASSIGNMENT.match(line)
    return match.group(1) if match else None


def write_block(
    path: Path, comments: list[str], values: dict[str, str], *, force: bool = False
) -> None:
    """Put ``values`` into the ``.env`` file at ``path`` under ``comments``.

    A missing file is created with mode 0600 (it holds passwords). Raises ``KeyExistsError``
    when the file already sets one of the keys and ``force`` is false; with ``force`` the old
    lines of those keys, and the spinup comment lines just above them, give way to the new block.
    """
    lines = path.read_text().splitlines() if path.exists() else []
    taken = [i for i, line in enumerate(lines) if assigned_key(line) in values]
    if taken and not force:
        found = sorted({key for i in taken if (key := assigned_key(lines[i]))})
        raise KeyExistsError(path, found)

    dropped: set[int] = set(taken)
    for i in taken:
        above = i - 1
        while above >= 0 and lines[above].startswith(COMMENT_MARK):
            dropped.add(above)
            above -= 1
    at = min(dropped) if dropped else len(lines)
    block = [f"{COMMENT_MARK} {text}" for text in comments]
    block += [f"{key}={quoted(value)}" for key, value in values.items()]
    kept_before = [line for i, line in enumerate(lines[:at]) if i not in dropped]
    kept_after = [line for i, line in enumerate(lines[at:], start=at) if i not in dropped]
    if kept_before and kept_before[-1].strip() and not dropped:
        block.insert(0, "")  # a blank line between what was there and the appended block
    text = "\n".join(kept_before + block + kept_after) + "\n"
    write_private(path, text)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; a file that does not exist yet is created 0600."""
    # os.open with the mode creates it private at once; an existing file keeps its own mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
