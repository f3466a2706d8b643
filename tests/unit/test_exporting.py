"""The pieces every driver's export is built from (shared/exporting.py)."""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import AsyncGenerator

from shared.contracts.kinds import EXPORT_CHUNK_BYTES
from shared.exporting import TAR_END, chunked, spooled_member


async def test_pieces_of_any_size_come_out_in_full_chunks_and_nothing_is_lost() -> None:
    sizes = [1, EXPORT_CHUNK_BYTES - 1, 3 * EXPORT_CHUNK_BYTES + 7, 0, 5]
    pieces = [bytes([n % 251]) * size for n, size in enumerate(sizes)]

    async def source() -> AsyncGenerator[bytes]:
        for piece in pieces:
            yield piece

    chunks = [chunk async for chunk in chunked(source())]
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) == EXPORT_CHUNK_BYTES for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= EXPORT_CHUNK_BYTES


async def test_a_reader_that_stops_early_closes_the_source() -> None:
    closed = False

    async def source() -> AsyncGenerator[bytes]:
        nonlocal closed
        try:
            while True:
                yield b"x" * EXPORT_CHUNK_BYTES
        finally:
            closed = True

    chunks = chunked(source())
    assert len(await anext(chunks)) == EXPORT_CHUNK_BYTES
    await chunks.aclose()
    assert closed


def test_a_spooled_member_reads_back_as_a_tar_member() -> None:
    body = b"line\n" * 70_000  # more than a chunk, not a whole number of blocks
    with tempfile.SpooledTemporaryFile() as spool:
        spool.write(body)
        archive = b"".join(spooled_member("docs/a.json", spool)) + TAR_END
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmember("docs/a.json")
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == body
