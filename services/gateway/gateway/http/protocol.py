"""uvicorn's HTTP protocol as the gateway serves it: writes sent together, refusals in JSON.

uvicorn writes a response's status line and headers as soon as the app starts the response,
and its body when the app sends it: two system calls, and on the client's side two segments to
take in, for every answer the gateway gives. ``GatewayHttpToolsProtocol`` hands uvicorn a
transport that holds what is written during one turn of the event loop and writes it at the end
of that turn in one call. A turn that starts a response and sends its body (every answer but a
stream) goes out as one write; a stream's chunks go out as they come, a turn later at most.

It also answers a request that does not parse as HTTP/1.1 (an unknown method, a bad header)
with the JSON error body every other answer has, where uvicorn sends a line of plain text, and
refuses a request whose head grows past a bound, which neither httptools nor uvicorn sets.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.schemas import ErrorBody
from shared.contracts.errors import ErrorCode

#: The most a request's line and headers may take together. httptools holds a header's bytes
#: until it ends and sets no bound, so without one a single request could fill the gateway's
#: memory. 64 KiB is what AWS's load balancers allow a whole head; nginx's default is 32 KiB.
MAX_HEAD_BYTES = 64 * 1024
#: How long a refused connection is still read (and dropped) before it closes (``_refuse``).
LINGER_S = 2.0
_HEAD_TOO_LARGE = (
    f"The request line and headers together are over {MAX_HEAD_BYTES // 1024} KiB. Send large"
    " data in the body, and keep cookies and custom headers short."
)
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

    def write_eof(self) -> None:
        """Send what is held, then end the writing side."""
        self._send_held()
        self._transport.write_eof()

    def _send_held(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.writelines(held)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401  (whatever the transport has)
        return getattr(self._transport, name)


class _HeadTooLargeError(Exception):
    """Stops the parse of a head past ``MAX_HEAD_BYTES`` from within a parser callback."""


class GatewayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a ``CoalescingTransport``, its refusals in JSON.

    It also bounds a request's head (``MAX_HEAD_BYTES``), which httptools and uvicorn do not.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport, then set up as uvicorn does."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._in_head = True
        #: Bytes received while the parser is in a head (httptools holds a header until it ends).
        self._received_in_head = 0
        #: The size of the chunk being parsed.
        self._chunk = 0
        self._messages_ended = 0
        self._head_too_large = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; refuse a head that grows past ``MAX_HEAD_BYTES``.

        While the parser is still in a head after a chunk, every byte since the head began is
        the head's: that bounds what httptools holds before a header ends. The chunk in which
        the last message ended is not counted, so the bound holds to within one chunk. A head
        that ends in the chunk that took it past the bound is measured exactly when it ends
        (``on_headers_complete``); smaller ones, nearly every request, cost nothing more.
        """
        if self._refused:
            return  # lingering after a refusal: read and dropped
        ended_before = self._messages_ended
        self._chunk = len(data)
        super().data_received(data)
        if self._refused or not self._in_head or self.transport.is_closing():
            return
        if self._messages_ended != ended_before:
            return  # what follows the message's end in this chunk is not counted
        self._received_in_head += len(data)
        if self._received_in_head > MAX_HEAD_BYTES:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        """The head is whole: what follows is the body, whatever its size."""
        self._in_head = False
        if self._received_in_head + self._chunk > MAX_HEAD_BYTES:
            # The request target and each header with its ``: `` and line end.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEAD_BYTES:
                # Raised in a parser callback, it stops the parse: uvicorn then answers through
                # send_400_response, which answers 431 instead.
                self._head_too_large = True
                raise _HeadTooLargeError
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next bytes begin another request's head."""
        super().on_message_complete()
        self._in_head = True
        self._received_in_head = 0
        self._messages_ended += 1

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002  (uvicorn's text, replaced)
        """Answer an unparsable request in the API's error shape, then close, as uvicorn does."""
        if self._head_too_large:
            self._refuse_head()
        else:
            self._refuse("400 Bad Request", ErrorCode.INVALID_REQUEST, _UNPARSABLE)

    def _refuse_head(self) -> None:
        self._refuse(
            "431 Request Header Fields Too Large",
            ErrorCode.REQUEST_HEADERS_TOO_LARGE,
            _HEAD_TOO_LARGE,
        )

    def _refuse(self, status: str, code: ErrorCode, message: str) -> None:
        """Answer with the API's error body before any route saw the request, and close.

        The close lingers: a socket closed with unread bytes resets the connection, and the
        client, still sending, would lose the answer. So the writing side ends first, what
        still arrives is dropped, and the connection closes when the client closes its side
        or ``LINGER_S`` later, whichever comes first (nginx's lingering close, shorter).
        """
        request_id = uuid.uuid4().hex
        body = msgspec.json.encode(
            ErrorBody(ok=False, error=code, message=message, request_id=request_id)
        )
        head = (
            f"HTTP/1.1 {status}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-request-id: {request_id}\r\n"
            "connection: close\r\n\r\n"
        )
        self._refused = True
        self.transport.write(head.encode("ascii") + body)
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
