"""Writing a new resource's connection settings into a ``.env`` file, like ``npx get-db``.

The settings go in as one block: comment lines (what it is, when it expires, how to claim it)
and then ``KEY=value`` lines. Everything else in the file is kept as it was. A key that is
already set is never overwritten unless the caller forces it; then the old block is replaced
where it stood. Each block's first comment names the resource's id, so ``rotate`` can rewrite
its values and ``rm`` remove it (ADR 0026).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Every comment line this module writes starts with this, so a forced rewrite can drop them.
COMMENT_MARK = "# spinup:"

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_ID_IN_COMMENT = re.compile(
    r"\bid ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
)
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


def _block_of(lines: list[str], resource_id: str) -> tuple[int, int] | None:
    """``[start, end)`` of the block written for ``resource_id``.

    A block is its comment lines, then the ``KEY=value`` lines right below them.
    """
    marker = f"id {resource_id}"
    for i, line in enumerate(lines):
        if line.startswith(COMMENT_MARK) and marker in line:
            start = i
            while start > 0 and lines[start - 1].startswith(COMMENT_MARK):
                start -= 1
            end = i + 1
            while end < len(lines) and lines[end].startswith(COMMENT_MARK):
                end += 1
            while end < len(lines) and assigned_key(lines[end]) is not None:
                end += 1
            return start, end
    return None


def block_keys(path: Path, resource_id: str) -> list[str]:
    """The keys of ``resource_id``'s block in the ``.env`` at ``path`` (none: no such block)."""
    lines = path.read_text().splitlines() if path.exists() else []
    found = _block_of(lines, resource_id)
    if found is None:
        return []
    return [key for line in lines[found[0] : found[1]] if (key := assigned_key(line))]


def block_ids(path: Path, keys: set[str]) -> list[str]:
    """The resource ids named in the spinup comments above the lines setting ``keys``."""
    lines = path.read_text().splitlines() if path.exists() else []
    ids: list[str] = []
    for i, line in enumerate(lines):
        if assigned_key(line) not in keys:
            continue
        above = i - 1
        while above >= 0 and assigned_key(lines[above]) is not None:
            above -= 1
        while above >= 0 and lines[above].startswith(COMMENT_MARK):
            if (match := _ID_IN_COMMENT.search(lines[above])) and match.group(1) not in ids:
                ids.append(match.group(1))
            above -= 1
    return ids


def remove_block(path: Path, resource_id: str) -> list[str]:
    """Remove ``resource_id``'s block from the ``.env`` at ``path``; the keys it set."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    found = _block_of(lines, resource_id)
    if found is None:
        return []
    start, end = found
    keys = [key for line in lines[start:end] if (key := assigned_key(line))]
    # The blank line written before an appended block goes with it.
    if start > 0 and not lines[start - 1].strip() and (end == len(lines) or not lines[end].strip()):
        start -= 1
    kept = lines[:start] + lines[end:]
    write_private(path, "\n".join(kept) + "\n" if kept else "")
    return keys


def replace_values(path: Path, resource_id: str, values: dict[str, str]) -> list[str]:
    """Set new ``values`` for the keys of ``resource_id``'s block in ``path``; the keys set."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    found = _block_of(lines, resource_id)
    if found is None:
        return []
    changed: list[str] = []
    for i in range(*found):
        key = assigned_key(lines[i])
        if key is not None and key in values:
            lines[i] = f"{key}={quoted(values[key])}"
            changed.append(key)
    write_private(path, "\n".join(lines) + "\n")
    return changed
