"""uvicorn's HTTP protocol, with each response's writes sent together.

uvicorn writes a response's status line and headers as soon as the app starts the response,
and its body when the app sends it: two system calls, and on the client's side two segments to
take in, for every answer the gateway gives. ``CoalescingHttpToolsProtocol`` hands uvicorn a
transport that holds what is written during one turn of the event loop and writes it at the end
of that turn in one call. A turn that starts a response and sends its body (every answer but a
stream) goes out as one write; a stream's chunks go out as they come, a turn later at most.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one loop turn leave in one ``writelines``.

    Everything else is the wrapped transport's: reading, pausing, peer addresses and closing
    (which first sends what is held, as closing a transport sends what it has buffered).
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Hold ``data`` until the end of this loop turn."""
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._send_held)
        self._held.append(data)

    def close(self) -> None:
        """Send what is held, then close."""
        self._send_held()
        self._transport.close()

    def _send_held(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.writelines(held)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401  (whatever the transport has)
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport, then set up as uvicorn does."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
