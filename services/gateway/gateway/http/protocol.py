"""uvicorn's HTTP protocol, with each response's writes sent together.

uvicorn writes a response's status line and headers as soon as the app starts the response,
and its body when the app sends it: two system calls, and on the client's side two segments to
take in, for every answer the gateway gives. ``CoalescingHttpToolsProtocol`` hands uvicorn a
transport that holds what is written during one turn of the event loop and writes it at the end
of that turn in one call. A turn that starts a response and sends its body (every answer but a
stream) goes out as one write; a stream's chunks go out as they come, a turn later at most.

It also answers a request that does not parse as HTTP/1.1 (an unknown method, a bad header)
with the JSON error body every other answer has, where uvicorn sends a line of plain text.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.schemas import ErrorBody
from shared.contracts.errors import ErrorCode

_UNPARSABLE = (
    "The request is not valid HTTP/1.1: its method, request line or a header could not be"
    " read. Send a standard method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS) and"
    " well-formed headers."
)


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

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002  (uvicorn's text, replaced)
        """Answer an unparsable request in the API's error shape, then close, as uvicorn does."""
        request_id = uuid.uuid4().hex
        body = msgspec.json.encode(
            ErrorBody(
                ok=False,
                error=ErrorCode.INVALID_REQUEST,
                message=_UNPARSABLE,
                request_id=request_id,
            )
        )
        head = (
            "HTTP/1.1 400 Bad Request\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
