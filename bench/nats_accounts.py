"""What the customer NATS server keeps of every tenant account it deleted (ADR 0056).

    .venv/bin/python -m bench.nats_accounts [--accounts 1000]

nats-server holds every account it has loaded (a connection, a request naming it) until it
restarts: deleting the account's JWT disables it and keeps it. This starts a throwaway stack
whose NATS servers log each garbage collection (``GODEBUG=gctrace=1``, and ``GOGC=1`` so they
collect at nearly every allocation). Then, for each way a tenant may have used its account, it
makes ``--accounts`` accounts with the queue driver, uses them so and deletes them. It prints how
many accounts the server still holds, its live heap after a collection and its resident memory,
against before:

- ``unused``: created and deleted, never connected to;
- ``connected``: a tenant connected once;
- ``stored``: a tenant connected, made a stream and stored a message in it.

Then it restarts the server, which is what lets go of them, and checks that a live tenant's
stream and message (stored on disk) are still there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import nats

from bench import drivers
from devstack.stack import REPO_ROOT, Stack
from queue_provisioner.driver import NatsAccountDriver
from shared.contracts.kinds import ResourceKind
from shared.plans import load_plans

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client as NatsClient

    from shared.contracts.kinds import NatsCredentials

#: The anonymous tier's limits: what most tenants of a customer NATS get.
LIMITS = load_plans(REPO_ROOT / "plans.yaml").anonymous.nats
MODES = ("unused", "connected", "stored")
#: One Go garbage collection, as ``gctrace`` logs it: ``... 12->13->7 MB, ...`` (live after it).
_GC_LINE = re.compile(r"^gc \d+ @.* (\d+)->(\d+)->(\d+) MB")
_AT_ONCE = 16
#: How long to wait for the server's next garbage collection after the deletes.
_COLLECTION_WAIT_S = 30.0


def _monitor(port: int, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return dict(json.load(answer))


def _live_heap_mb(log_path: Path, since: int) -> int | None:
    """The live heap after the last collection logged past byte ``since`` (MB), if any."""
    with log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    heaps = [int(m.group(3)) for line in lines if (m := _GC_LINE.match(line))]
    return heaps[-1] if heaps else None


class State(NamedTuple):
    """What the server holds at one moment."""

    accounts: int
    heap_mb: int
    resident_mb: float

    def line(self, label: str) -> str:
        """The state as one line of the printout."""
        return (
            f"{label:10} held {self.accounts:6}  heap {self.heap_mb:5} MB"
            f"  rss {self.resident_mb:7.1f} MB"
        )


class Server:
    """The customer NATS server of the bench's stack, as its monitor and its log show it."""

    def __init__(self, stack: Stack) -> None:
        server = stack.servers["customer-nats"]
        self.port = stack.profile.ports.customer_nats_monitor
        self.log_path = server.log_path

    async def state(self) -> State:
        """Accounts held, live heap after the server's next collection, resident memory."""
        since = self.log_path.stat().st_size
        deadline = time.monotonic() + _COLLECTION_WAIT_S
        while (heap := _live_heap_mb(self.log_path, since)) is None:
            if time.monotonic() > deadline:
                msg = f"no garbage collection logged in {self.log_path}: is GODEBUG set?"
                raise RuntimeError(msg)
            # A monitor request allocates a little: at GOGC=1 that is enough for a collection.
            await asyncio.to_thread(_monitor, self.port, "/healthz")
            await asyncio.sleep(0.2)
        accounts = await asyncio.to_thread(_monitor, self.port, "/accountz")
        varz = await asyncio.to_thread(_monitor, self.port, "/varz")
        return State(len(accounts.get("accounts") or []), heap, int(varz["mem"]) / 1e6)


@contextlib.asynccontextmanager
async def _connected(credentials: NatsCredentials) -> AsyncIterator[NatsClient]:
    """A tenant's connection with its own credentials (a ``.creds`` file, as a client has)."""
    with tempfile.NamedTemporaryFile("w", suffix=".creds") as creds:
        creds.write(credentials.creds)
        creds.flush()
        client = await nats.connect(credentials.connection_url, user_credentials=creds.name)
        try:
            yield client
        finally:
            await client.close()


async def _use(credentials: NatsCredentials, mode: str) -> None:
    if mode == "unused":
        return
    async with _connected(credentials) as client:
        if mode == "stored":
            js = client.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"], max_bytes=1_000_000)
            await js.publish("orders.one", b"a tenant's message")


async def _churn(driver: NatsAccountDriver, mode: str, count: int) -> None:
    """Create ``count`` accounts, use each as ``mode`` says, delete them all."""
    slots = asyncio.Semaphore(_AT_ONCE)
    rids = [uuid.uuid4() for _ in range(count)]

    async def make(rid: uuid.UUID) -> None:
        async with slots:
            await _use(await driver.create(rid, LIMITS), mode)

    async def delete(rid: uuid.UUID) -> None:
        async with slots:
            await driver.delete(rid)

    await asyncio.gather(*(make(rid) for rid in rids))
    await asyncio.gather(*(delete(rid) for rid in rids))


async def measure(stack: Stack, count: int) -> None:
    """Each mode in turn on one server; print what it holds more per deleted account."""
    server = Server(stack)
    async with drivers.connected(ResourceKind.NATS, stack.env()) as driver:
        if not isinstance(driver, NatsAccountDriver):
            raise TypeError(type(driver))
        print(f"{count} accounts per mode; held, live heap after a collection, resident memory")  # noqa: T201
        before = await server.state()
        print(before.line("start"))  # noqa: T201
        for mode in MODES:
            started = time.monotonic()
            await _churn(driver, mode, count)
            after = await server.state()
            held = (after.accounts - before.accounts) / count
            heap_kb = (after.heap_mb - before.heap_mb) * 1000 / count
            rss_kb = (after.resident_mb - before.resident_mb) * 1000 / count
            print(  # noqa: T201
                f"{after.line(mode)}  per deleted account: held {held:.2f},"
                f" heap {heap_kb:.1f} KB, rss {rss_kb:.1f} KB"
                f"  ({time.monotonic() - started:.0f} s)"
            )
            before = after
        await _restart(stack, server, driver)


async def _restart(stack: Stack, server: Server, driver: NatsAccountDriver) -> None:
    """Restart the server with one live tenant: what it holds after, and the tenant's message."""
    rid = uuid.uuid4()
    credentials = await driver.create(rid, LIMITS)
    await _use(credentials, "stored")
    await asyncio.to_thread(stack.stop_server, "customer-nats")
    await asyncio.to_thread(stack.start_server, "customer-nats")
    after = await server.state()
    async with _connected(credentials) as client:
        kept = await client.jetstream().get_msg("ORDERS", 1)
    await driver.delete(rid)
    print(  # noqa: T201
        f"{after.line('restarted')}  a live tenant's message after it: {kept.data!r}"
    )


def main() -> None:
    """Start the stack with its Go servers logging collections, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=1000)
    args = parser.parse_args()
    # Inherited by the servers the stack starts (nats-server among them).
    os.environ["GODEBUG"] = "gctrace=1"
    os.environ["GOGC"] = "1"
    with Stack.for_tests(REPO_ROOT, name="nats-accounts") as stack:
        asyncio.run(measure(stack, args.accounts))


if __name__ == "__main__":
    main()
