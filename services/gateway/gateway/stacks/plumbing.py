"""What the stack routes keep for the life of a gateway replica."""

from __future__ import annotations

import asyncio

import httpx

# The proxy waits this long for an app to answer; a slow upload or download keeps going.
PROXY_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class StackPlumbing:
    """The proxy's HTTP client and the switch that ends open log streams.

    One connection pool serves every app; the switch is thrown at shutdown, which would
    otherwise wait for the log streams forever.
    """

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=PROXY_TIMEOUT, follow_redirects=False)
        self.stopping = asyncio.Event()

    def end_streams(self) -> None:
        """Make every open log stream finish now."""
        self.stopping.set()

    async def close(self) -> None:
        """End the streams and close the proxy's connections."""
        self.end_streams()
        await self.http.aclose()
