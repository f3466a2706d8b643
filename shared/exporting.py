"""Pieces every driver's ``export`` builds its stream from (docs/adr/0030, docs/export-formats.md).

A driver yields chunks of at most ``EXPORT_CHUNK_BYTES`` whatever the size of what it reads:
``Chunker`` cuts lines, headers and object bodies into them. Tar archives (MongoDB, S3) are
written member by member: a header needs the member's size, so an object comes with its size
from a listing and generated content is spooled to a temporary file first (``spooled_member``).
"""

from __future__ import annotations

import tarfile
import time
from typing import IO, TYPE_CHECKING

from shared.contracts.kinds import EXPORT_CHUNK_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator

TAR_BLOCK = 512
#: Two zero blocks end a tar archive.
TAR_END = b"\0" * (2 * TAR_BLOCK)


class Chunker:
    """Gathers pieces into chunks of exactly ``EXPORT_CHUNK_BYTES`` (the last one shorter)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def add(self, piece: bytes) -> list[bytes]:
        """Take ``piece``; return the chunks that are now full."""
        self._buffer += piece
        full: list[bytes] = []
        while len(self._buffer) >= EXPORT_CHUNK_BYTES:
            full.append(bytes(self._buffer[:EXPORT_CHUNK_BYTES]))
            del self._buffer[:EXPORT_CHUNK_BYTES]
        return full

    def rest(self) -> list[bytes]:
        """What is left (less than a chunk, none if empty), emptying the buffer."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [rest] if rest else []


def tar_header(name: str, size: int, mtime: float) -> bytes:
    """The header block(s) of a regular file member (PAX: long and non-ASCII names kept)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_padding(size: int) -> bytes:
    """The zeros after a member of ``size`` bytes, up to the next block."""
    return b"\0" * (-size % TAR_BLOCK)


def spooled_member(name: str, spool: IO[bytes], out: Chunker) -> Iterator[bytes]:
    """A tar member holding what was written to ``spool``, read back a chunk at a time."""
    size = spool.tell()
    spool.seek(0)
    yield from out.add(tar_header(name, size, time.time()))
    while piece := spool.read(EXPORT_CHUNK_BYTES):
        yield from out.add(piece)
    yield from out.add(tar_padding(size))
