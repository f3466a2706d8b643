"""What removing one stack's upload costs as stacks come and go, by name against by listing.

    .venv/bin/python -m bench.stack_uploads [--stacks 0,1000,5000,20000]

On a throwaway ``nats-server`` with JetStream, each way in turn on a fresh store: stacks
(a manifest and a 2 KB build context each) are stored and removed until the given number
have been, then one more stack's upload is removed and timed (wall, and this process's CPU),
with the store's stream size beside it.

- ``listing``: what the deployer did until 2026-12-07: list the store (``ignore_deletes``), then
  nats-py's ``ObjectStore.delete`` of each of the stack's objects, which keeps a tombstone.
- ``by name``: ``shared.stacks.uploads.remove_upload``: the names from the manifest, each object
  purged whole.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import nats
from nats.js.api import ObjectStoreConfig, StorageType

from bench.harness import tmp_dir
from devstack.procs import free_ports, wait_until
from devstack.servers import nats_server_binary
from shared.contracts.subjects import STACK_UPLOADS_BUCKET
from shared.stacks.uploads import put_upload, remove_upload

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

_MANIFEST = b"services:\n  web: {build: web.tar, port: 8080}\n"
_CONTEXT = b"c" * 2048


async def _by_listing(js: JetStreamContext, stack_id: uuid.UUID) -> None:
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    prefix = f"{stack_id}/"
    for info in await store.list(ignore_deletes=True):
        if info.name and info.name.startswith(prefix):
            await store.delete(info.name)


async def _leaving_tombstones(js: JetStreamContext, stack_id: uuid.UUID) -> None:
    """What ``_by_listing`` leaves behind, without its listing: the history, made quickly."""
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    for name in ("spinup.yaml", "web.tar"):
        await store.delete(f"{stack_id}/{name}")


async def _by_name(js: JetStreamContext, stack_id: uuid.UUID) -> None:
    await remove_upload(js, stack_id)


Remove = Callable[["JetStreamContext", uuid.UUID], Awaitable[None]]
#: Each way: how the timed removal is made, and how the stacks before it were removed (the
#: same store state; a listing for each of 20,000 would take the bench hours).
WAYS: dict[str, tuple[Remove, Remove]] = {
    "listing": (_by_listing, _leaving_tombstones),
    "by name": (_by_name, _by_name),
}


async def _measure(url: str, timed: Remove, before: Remove, points: list[int]) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    await js.create_object_store(
        STACK_UPLOADS_BUCKET, config=ObjectStoreConfig(storage=StorageType.FILE)
    )
    removed = 0
    for point in points:
        while removed < point:
            stack_id = uuid.uuid4()
            await put_upload(js, stack_id, _MANIFEST, {"web.tar": _CONTEXT})
            await before(js, stack_id)
            removed += 1
        stack_id = uuid.uuid4()
        await put_upload(js, stack_id, _MANIFEST, {"web.tar": _CONTEXT})
        wall, cpu = time.perf_counter(), time.process_time()
        await timed(js, stack_id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stream = (await js.stream_info(f"OBJ_{STACK_UPLOADS_BUCKET}")).state
        print(  # noqa: T201
            f"  {point:>7,} removed before: {wall * 1000:8.1f} ms wall, {cpu * 1000:7.1f} ms CPU;"
            f" the store holds {stream.messages:,} messages, {stream.bytes:,} bytes",
            flush=True,
        )
    await client.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    """Each way on a fresh server, the points in order."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="0,1000,5000,20000", help="points to time at")
    args = parser.parse_args()
    points = sorted(int(point) for point in args.stacks.split(","))
    binary = str(nats_server_binary())
    for way, (timed, before) in WAYS.items():
        print(f"{way}:", flush=True)  # noqa: T201
        with tmp_dir() as directory:
            port = free_ports(1)[0]
            server = subprocess.Popen(  # noqa: S603  (our own binary, fixed arguments)
                [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(directory)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(functools.partial(_listening, port), timeout=10, what="nats-server")
                asyncio.run(_measure(f"nats://127.0.0.1:{port}", timed, before, points))
            finally:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
