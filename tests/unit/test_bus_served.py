"""A process's requests to an endpoint it serves itself (ADR 0036), against the real NATS server:
they go straight to its own handler, with the same answers, failures and timeouts as over NATS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.bus import Bus
from shared.contracts.commands import SweepUsage
from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import ResourceKind
from shared.contracts.replies import UsageSwept
from shared.contracts.subjects import Endpoint


@pytest.fixture
async def buses(env: dict[str, str]) -> AsyncIterator[tuple[Bus, Bus]]:
    own = await Bus.connect(env["SPINUP_NATS_URL"], name="test-served-own")
    other = await Bus.connect(env["SPINUP_NATS_URL"], name="test-served-other")
    yield own, other
    await other.close()
    await own.close()


def endpoint(timeout: float = 5.0) -> Endpoint[SweepUsage, UsageSwept]:
    subject = f"test.served.{uuid.uuid4().hex}"
    return Endpoint(subject, SweepUsage, UsageSwept, "test-served", timeout)


def command() -> SweepUsage:
    return SweepUsage(
        command_id=uuid.uuid4(),
        correlation_id="test",
        deadline=time.time() + 5,
        kind=ResourceKind.REDIS,
    )


def swept(measured: int) -> UsageSwept:
    return UsageSwept(
        kind=ResourceKind.REDIS, measured=measured, over_quota=0, blocked=0, unblocked=0
    )


async def test_a_process_answers_its_own_requests_and_the_others_theirs(
    buses: tuple[Bus, Bus], env: dict[str, str]
) -> None:
    own, other = buses
    served = endpoint()
    received: dict[str, list[SweepUsage]] = {"own": [], "other": []}

    def handler(name: str, answer: int):
        async def handle(sent: SweepUsage) -> UsageSwept:
            received[name].append(sent)
            return swept(answer)

        return handle

    # Both in one queue group, as two gateway replicas serve the webhook commands.
    await own.serve(served, handler("own", 1), max_in_flight=4)
    await other.serve(served, handler("other", 2), max_in_flight=4)
    await own.flush()
    await other.flush()

    sent = [command() for _ in range(20)]
    replies = await asyncio.gather(*(own.request(served, each) for each in sent))
    assert [reply.measured for reply in replies] == [1] * 20
    # The very objects: nothing was encoded, sent or decoded.
    assert all(a is b for a, b in zip(received["own"], sent, strict=True))
    assert received["other"] == []

    # A process that does not serve the endpoint reaches the queue group over NATS, as always.
    caller = await Bus.connect(env["SPINUP_NATS_URL"], name="test-served-caller")
    try:
        sent = [command() for _ in range(20)]
        replies = await asyncio.gather(*(caller.request(served, each) for each in sent))
    finally:
        await caller.close()
    assert {reply.measured for reply in replies} <= {1, 2}
    handled = [*received["own"][20:], *received["other"]]
    assert sorted(each.command_id for each in handled) == sorted(each.command_id for each in sent)
    assert not any(a is b for a in handled for b in sent)


async def test_its_own_handlers_failures_reach_it_as_over_nats(buses: tuple[Bus, Bus]) -> None:
    own, _ = buses
    refusing, crashing = endpoint(), endpoint()

    async def refuse(_: SweepUsage) -> UsageSwept:
        msg = "not now"
        raise SpinupError(ErrorCode.BACKEND_UNAVAILABLE, msg, retryable=True)

    async def crash(_: SweepUsage) -> UsageSwept:
        msg = "a bug"
        raise RuntimeError(msg)

    await own.serve(refusing, refuse, max_in_flight=1)
    await own.serve(crashing, crash, max_in_flight=1)
    with pytest.raises(SpinupError) as refused:
        await own.request(refusing, command())
    assert (refused.value.code, refused.value.message) == (ErrorCode.BACKEND_UNAVAILABLE, "not now")
    assert refused.value.retryable
    with pytest.raises(SpinupError) as crashed:
        await own.request(crashing, command())
    # The bug stays in the worker's log; the caller gets the same words as from another process.
    assert crashed.value.code is ErrorCode.INTERNAL_ERROR
    assert "a bug" not in crashed.value.message


async def test_a_caller_that_stops_waiting_does_not_cut_its_own_handler_short(
    buses: tuple[Bus, Bus],
) -> None:
    own, _ = buses
    slow = endpoint(timeout=0.2)
    release, finished = asyncio.Event(), asyncio.Event()

    async def take_long(_: SweepUsage) -> UsageSwept:
        # Runs until the test lets it go: past the caller's timeout and reply grace.
        await release.wait()
        finished.set()
        return swept(0)

    await own.serve(slow, take_long, max_in_flight=1)
    with pytest.raises(SpinupError) as timed_out:
        await own.request(slow, command())
    assert timed_out.value.code is ErrorCode.WORKER_TIMEOUT
    # The caller gave up while its handler was still at work, and the handler was not cancelled:
    # as a worker in another process would, it finishes (and, past the deadline, undoes).
    assert not finished.is_set()
    release.set()
    await asyncio.wait_for(finished.wait(), 2)
