"""The streamed reply of an export (``Bus.request_stream`` / ``serve_stream``, ADR 0030) against
the real NATS server: the worker never runs more than a window ahead of what the receiver has
consumed, and a receiver that goes away or falls silent makes the worker close its chunks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from shared.bus import Bus
from shared.contracts.commands import ExportResource
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import EXPORT_CHUNK_BYTES
from shared.contracts.replies import ExportStarted
from shared.contracts.subjects import EXPORT_WINDOW, Endpoint


class Source:
    """Chunks numbered from 0, counting what was produced and seeing when it is closed."""

    def __init__(self, count: int, *, fail_after: int | None = None, size: int = 1024) -> None:
        self.count = count
        self.fail_after = fail_after
        self.size = size
        self.produced = 0
        self.closed = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for n in range(self.count):
                if self.fail_after is not None and n == self.fail_after:
                    raise SpinupError(ErrorCode.BACKEND_ERROR, "the dump failed midway")
                self.produced += 1
                yield n.to_bytes(4, "big") * (self.size // 4)
        finally:
            self.closed.set()


def export_command(subject: str, window: int) -> ExportResource:
    return ExportResource(
        command_id=uuid.uuid4(),
        correlation_id="test",
        deadline=time.time() + 5,
        resource_id=uuid.uuid4(),
        format="custom",
        stream_subject=subject,
        window=window,
    )


async def drain(chunks: AsyncIterator[bytes], into: list[bytes]) -> None:
    async for chunk in chunks:
        into.append(chunk)  # noqa: PERF401  (kept as they come: the stream fails midway)


@pytest.fixture
async def buses(env: dict[str, str]) -> AsyncIterator[tuple[Bus, Bus]]:
    worker = await Bus.connect(env["SPINUP_NATS_URL"], name="test-export-worker")
    gateway = await Bus.connect(env["SPINUP_NATS_URL"], name="test-export-gateway")
    yield worker, gateway
    await gateway.close()
    await worker.close()


def endpoint() -> Endpoint[ExportResource, ExportStarted]:
    return Endpoint(f"test.export.{uuid.uuid4().hex}", ExportResource, ExportStarted, "t", 5.0)


async def serve(
    worker: Bus, source: Source | Callable[[], SpinupError], *, idle_s: float = 30.0
) -> Endpoint[ExportResource, ExportStarted]:
    served = endpoint()

    async def start(command: ExportResource) -> AsyncIterator[bytes]:
        assert command.window == EXPORT_WINDOW
        if not isinstance(source, Source):
            raise source()
        return source.chunks()

    await worker.serve_stream(served, start, max_in_flight=2, idle_s=idle_s)
    await worker.flush()
    return served


async def test_the_worker_never_runs_more_than_a_window_ahead_of_the_reader(
    buses: tuple[Bus, Bus],
) -> None:
    worker, gateway = buses
    source = Source(60)
    served = await serve(worker, source)
    started, chunks = await gateway.request_stream(served, export_command)
    assert started.format == "custom"

    consumed = 0
    ahead: list[int] = []
    async for chunk in chunks:
        assert int.from_bytes(chunk[:4], "big") == consumed  # in order, none lost
        consumed += 1
        if consumed in {5, 30}:
            # A reader that stalls: the worker fills the window and waits for credit.
            await asyncio.sleep(0.5)
        ahead.append(source.produced - consumed)
    assert consumed == 60
    # The generator is asked for one chunk before the pump waits for room to send it.
    assert max(ahead) <= EXPORT_WINDOW + 1
    # ...and the window was used: a stalled reader found it full.
    assert max(ahead) >= EXPORT_WINDOW - 1
    await asyncio.wait_for(source.closed.wait(), 5)


async def test_chunks_larger_than_the_limit_are_split(buses: tuple[Bus, Bus]) -> None:
    worker, gateway = buses
    source = Source(2, size=EXPORT_CHUNK_BYTES * 2 + 8)
    served = await serve(worker, source)
    _, chunks = await gateway.request_stream(served, export_command)
    sizes = [len(chunk) async for chunk in chunks]
    assert max(sizes) <= EXPORT_CHUNK_BYTES
    assert sum(sizes) == 2 * (EXPORT_CHUNK_BYTES * 2 + 8)


async def test_a_reader_that_goes_away_makes_the_worker_close_its_chunks(
    buses: tuple[Bus, Bus],
) -> None:
    worker, gateway = buses
    source = Source(10_000)
    served = await serve(worker, source)
    _, chunks = await gateway.request_stream(served, export_command)
    for _ in range(3):
        await anext(chunks)
    await chunks.aclose()  # what the HTTP layer does when its client disconnects
    await asyncio.wait_for(source.closed.wait(), 5)
    assert source.produced <= 3 + EXPORT_WINDOW + 1


async def test_a_silent_reader_is_given_up_after_the_idle_timeout(
    buses: tuple[Bus, Bus],
) -> None:
    worker, gateway = buses
    source = Source(10_000)
    served = await serve(worker, source, idle_s=0.5)
    _, chunks = await gateway.request_stream(served, export_command)
    await anext(chunks)
    # Neither reading nor closing (a gateway that died): the worker stops on its own.
    await asyncio.wait_for(source.closed.wait(), 5)
    assert source.produced <= 1 + EXPORT_WINDOW + 1
    await chunks.aclose()


async def test_a_refused_start_and_a_failure_midway_reach_the_reader_as_errors(
    buses: tuple[Bus, Bus],
) -> None:
    worker, gateway = buses
    refused = await serve(worker, lambda: SpinupError(ErrorCode.RESOURCE_GONE, "gone"))
    with pytest.raises(SpinupError) as at_start:
        await gateway.request_stream(refused, export_command)
    assert at_start.value.code is ErrorCode.RESOURCE_GONE

    source = Source(100, fail_after=20)
    failing = await serve(worker, source)
    _, chunks = await gateway.request_stream(failing, export_command)
    received: list[bytes] = []
    with pytest.raises(SpinupError) as midway:
        await drain(chunks, received)
    assert midway.value.code is ErrorCode.BACKEND_ERROR
    assert len(received) == 20


async def test_nobody_serving_is_worker_unavailable(buses: tuple[Bus, Bus]) -> None:
    _, gateway = buses
    with pytest.raises(SpinupError) as refused:
        await gateway.request_stream(endpoint(), export_command)
    assert refused.value.code is ErrorCode.WORKER_UNAVAILABLE


async def test_a_worker_that_stops_cuts_its_streams_with_a_retryable_error(
    env: dict[str, str],
) -> None:
    worker = await Bus.connect(env["SPINUP_NATS_URL"], name="test-export-stopping")
    gateway = await Bus.connect(env["SPINUP_NATS_URL"], name="test-export-gateway")
    try:
        source = Source(10_000)
        served = await serve(worker, source)
        _, chunks = await gateway.request_stream(served, export_command)
        await anext(chunks)
        await asyncio.wait_for(worker.close(), 5)  # does not wait for the export to end
        assert source.closed.is_set()
        with pytest.raises(SpinupError) as cut:
            await drain(chunks, [])
        assert cut.value.code is ErrorCode.WORKER_UNAVAILABLE
        assert cut.value.retryable
    finally:
        await gateway.close()
        await worker.close()
