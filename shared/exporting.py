"""Pieces every driver's ``export`` builds its stream from (docs/adr/0030, docs/export-formats.md).

A driver writes its export as pieces of any size (lines, tar headers, object bodies) and hands
them to ``chunked``, which sends them on in chunks of at most ``EXPORT_CHUNK_BYTES`` whatever the
size of what it reads. Tar archives (MongoDB, S3) are written member by member: a header needs
the member's size, so an object comes with its size from a listing and generated content is
spooled to a temporary file first (``spooled_member``).
"""

from __future__ import annotations

import contextlib
import tarfile
import time
from typing import IO, TYPE_CHECKING

from shared.contracts.kinds import EXPORT_CHUNK_BYTES

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator

TAR_BLOCK = 512
#: Two zero blocks end a tar archive.
TAR_END = b"\0" * (2 * TAR_BLOCK)


async def chunked(pieces: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    """``pieces`` in chunks of exactly ``EXPORT_CHUNK_BYTES`` (the last one shorter).

    Closing the chunks closes ``pieces`` too, so a driver's cleanup (a cursor, a connection)
    runs when the reader stops early.
    """
    buffer = bytearray()
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            buffer += piece
            while len(buffer) >= EXPORT_CHUNK_BYTES:
                yield bytes(buffer[:EXPORT_CHUNK_BYTES])
                del buffer[:EXPORT_CHUNK_BYTES]
    if buffer:
        yield bytes(buffer)


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


def spooled_member(name: str, spool: IO[bytes]) -> Iterator[bytes]:
    """A tar member holding what was written to ``spool``, read back a chunk at a time."""
    size = spool.tell()
    spool.seek(0)
    yield tar_header(name, size, time.time())
    while piece := spool.read(EXPORT_CHUNK_BYTES):
        yield piece
    yield tar_padding(size)
