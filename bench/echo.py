"""A NATS responder that answers every request on one subject with its own payload.

    SPINUP_NATS_URL=nats://... python -m bench.echo SUBJECT

The floor of a gateway-to-worker round trip: a separate process like a worker, a callback
subscription like ``shared.bus``, and nothing done with the message. Prints ``ready`` once
subscribed; runs until terminated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import nats
import uvloop


async def serve(url: str, subject: str) -> None:
    """Answer on ``subject`` until SIGTERM."""
    client = await nats.connect(url, name="bench-echo")

    async def answer(message: Any) -> None:  # noqa: ANN401 (nats.aio.msg.Msg)
        await message.respond(message.data)

    await client.subscribe(subject, cb=answer)
    await client.flush()
    print("ready", flush=True)  # noqa: T201
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await client.close()


def main() -> None:
    """Entry point."""
    uvloop.run(serve(os.environ["SPINUP_NATS_URL"], sys.argv[1]))


if __name__ == "__main__":
    main()
