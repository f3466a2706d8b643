"""``spinup webhook forward`` and ``spinup webhook replay``: captured requests sent to your app.

Both send from this machine (the server never sends captured requests anywhere): ``forward``
follows the receiver's live stream and re-sends each request to a local URL; ``replay`` re-sends
one. A request goes out as it came in: same method, path below the receive URL, query, headers
(repeated ones kept, in order; hop-by-hop ones dropped; ``Host`` is the local one) and body bytes.

``forward`` is resumable: each stream event's id is a cursor, kept after every request it
forwards (in ``$XDG_CONFIG_HOME/spinup/forward/``, not the token itself). After a dropped
connection it reconnects with that cursor as ``Last-Event-ID``, and a new ``forward`` of the same
receiver starts from it too, so the server sends what came in meanwhile and nothing twice. A
request is at-least-once only across a crash between its local answer and the cursor's save.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from spinup_cli.api import EXIT_USAGE, CliError, SpinupClient, api_error, config_dir

# Per-hop headers describe one connection, not the request (RFC 9110 7.6.1); Host names the
# receiver's server, Expect asks it (not the app) to wait. The stored request has none of the
# first kind already; dropping them again keeps an old capture from breaking the local call.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "expect",
    }
)
# What a path below the receive URL may keep as it is when sent again (RFC 3986 pchar and "/").
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
#: The local app gets this long to answer one request.
FORWARD_TIMEOUT_S = 30.0
# The server sends a comment every 15 s: this much silence means the connection is gone.
_STREAM_SILENCE_S = 45.0
# Waits between reconnections, then the last one again and again.
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def _say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests are re-sent: a local (or any) http(s) URL given on the command line."""

    scheme: str
    netloc: str
    path: str
    query: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """The URL, or a usage error saying what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            msg = f"{url!r} is not an http(s) URL: give one like http://localhost:3000/hooks."
            raise CliError(msg, EXIT_USAGE)
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            msg = f"{url!r} has an invalid port."
            raise CliError(msg, EXIT_USAGE) from None
        return cls(parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query)

    def path_for(self, request: dict[str, Any]) -> str:
        """The local path and query for a captured request (its path is below the receive URL)."""
        below = str(request.get("path") or "/")
        path = quote(self.path + (below if below != "/" else ""), safe=_PATH_SAFE) or "/"
        query = "&".join(q for q in (self.query, str(request.get("query") or "")) if q)
        return f"{path}?{query}" if query else path


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the local app answered (``status`` None: it could not be reached; ``error`` why)."""

    status: int | None
    elapsed_ms: float
    error: str | None = None


def body_of(request: dict[str, Any]) -> bytes:
    """A captured request's body bytes (stored as text, or base64 when not UTF-8)."""
    body = str(request.get("body") or "")
    if request.get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode()


def send(target: Target, request: dict[str, Any]) -> Delivery:
    """Send a captured request to ``target``, exactly as captured; what came back."""
    connection_class = (
        http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(target.netloc, timeout=FORWARD_TIMEOUT_S)
    body = body_of(request)
    headers = [
        (str(name), str(value))
        for name, value in request.get("headers") or []
        if str(name).lower() not in _NOT_FORWARDED
    ]
    started = time.monotonic()
    try:
        # http.client adds nothing it is not told to: the headers sent are the captured ones.
        connection.putrequest(
            str(request["method"]),
            target.path_for(request),
            skip_host=True,
            skip_accept_encoding=True,
        )
        connection.putheader("Host", target.netloc)
        for name, value in headers:
            connection.putheader(name, value)
        if body and not any(name.lower() == "content-length" for name, _ in headers):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        response.read()
        return Delivery(response.status, (time.monotonic() - started) * 1000)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        return Delivery(None, (time.monotonic() - started) * 1000, reason)
    finally:
        connection.close()


def delivery_line(request: dict[str, Any], target: Target, delivery: Delivery) -> str:
    """``08:01:02  POST   /hooks/stripe?x=1  -> 200  12 ms``: one line per request sent."""
    received = str(request.get("received_at") or "")
    try:
        clock = datetime.fromisoformat(received).astimezone(UTC).strftime("%H:%M:%S")
    except ValueError:
        clock = datetime.now(UTC).strftime("%H:%M:%S")
    outcome = str(delivery.status) if delivery.status is not None else f"failed ({delivery.error})"
    return (
        f"{clock}  {request.get('method', '?'):<7}{target.path_for(request)}  -> {outcome}"
        f"  {delivery.elapsed_ms:.0f} ms"
    )


def _position_path(api_url: str, token: str) -> Path:
    # Named by a hash: the token is a credential and stays out of file names.
    digest = hashlib.sha256(f"{api_url}\n{token}".encode()).hexdigest()[:24]
    return config_dir() / "forward" / f"{digest}.json"


@dataclass
class Position:
    """The cursor of the last request forwarded for one receiver, kept on disk."""

    path: Path
    cursor: str | None = None

    @classmethod
    def load(cls, path: Path) -> Position:
        """The saved position, or none when there is no (readable) file."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path)
        cursor = saved.get("cursor") if isinstance(saved, dict) else None
        return cls(path, cursor if isinstance(cursor, str) else None)

    def save(self, cursor: str) -> None:
        """Keep ``cursor``: written whole (a rename), so a crash leaves the old or the new one."""
        self.cursor = cursor
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"cursor": cursor}))
        partial.replace(self.path)

    def forget(self) -> None:
        """Start afresh: the position no longer applies."""
        self.cursor = None
        self.path.unlink(missing_ok=True)


@dataclass
class ServerEvent:
    """One Server-Sent Event."""

    event: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


def server_events(lines: Iterator[str]) -> Iterator[ServerEvent]:
    """The events of an SSE body (comments skipped), as the SSE standard splits them."""
    current = ServerEvent()
    for line in lines:
        if not line:
            if current.data:
                yield current
            current = ServerEvent()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            current.event = value
        elif name == "data":
            current.data.append(value)
        elif name == "id":
            current.id = value


class _StreamEndedError(Exception):
    """The stream stopped without a ``closed`` event (the gateway restarted, a proxy cut it)."""


def _stream_client(client: SpinupClient) -> httpx.Client:
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    timeout = httpx.Timeout(10.0, read=_STREAM_SILENCE_S)
    return httpx.Client(base_url=client.url, headers=headers, timeout=timeout)


@dataclass
class Forwarder:
    """Follows one receiver's stream and re-sends each request; see the module docstring."""

    client: SpinupClient
    token: str
    target: Target
    position: Position
    replay_from: str | None = None
    forwarded: int = 0
    #: Streams opened so far (the first one says "Forwarding", later ones "Reconnected").
    connections: int = 0

    def run(self) -> int:
        """Forward until the receiver is deleted (0); raises KeyboardInterrupt on Ctrl-C."""
        if self.position.cursor is None and self.replay_from is None:
            self.position.save(self._latest_cursor())
        attempt = 0
        with _stream_client(self.client) as http:
            while True:
                opened = self.connections
                try:
                    if self._follow(http):
                        return 0
                except (httpx.TransportError, _StreamEndedError) as exc:
                    # A stream that opened resets the backoff: this is a new drop, not the same.
                    attempt = 0 if self.connections > opened else attempt + 1
                    wait = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                    why = "the stream ended" if isinstance(exc, _StreamEndedError) else str(exc)
                    _say(
                        f"connection lost ({why or type(exc).__name__}); again in {wait} s",
                        err=True,
                    )
                    time.sleep(wait)

    def _latest_cursor(self) -> str:
        """Where "from now on" starts: after the newest request the receiver has kept."""
        listed = self.client.request(
            "GET", f"/webhook/{quote(self.token, safe='')}/requests?limit=1"
        )
        return str(listed["latest_cursor"])

    def _follow(self, http: httpx.Client) -> bool:
        """One connection: True when the receiver is gone, else raises when the stream ends."""
        params: dict[str, str] = {}
        headers: dict[str, str] = {}
        if self.position.cursor is not None:
            headers["Last-Event-ID"] = self.position.cursor
        elif self.replay_from is not None:
            params["from_id"] = self.replay_from
        path = f"/webhook/{quote(self.token, safe='')}/stream"
        try:
            with http.stream("GET", path, params=params, headers=headers) as response:
                if response.status_code >= 500:  # noqa: PLR2004  (a server error: try again)
                    response.read()
                    raise _StreamEndedError
                if response.is_error:
                    response.read()
                    raise api_error(response)
                verb = "Reconnected; forwarding" if self.connections else "Forwarding"
                self.connections += 1
                _say(f"{verb} requests to {self._shown_target()} (Ctrl-C stops)…", err=True)
                for event in server_events(response.iter_lines()):
                    if self._handle(event):
                        return True
        except httpx.ConnectError:
            if not self.connections:
                msg = f"Spinup is not reachable at {self.client.url}: is `make run` going?"
                raise CliError(msg) from None
            raise
        raise _StreamEndedError

    def _shown_target(self) -> str:
        return f"{self.target.scheme}://{self.target.netloc}{self.target.path or '/'}"

    def _handle(self, event: ServerEvent) -> bool:
        data = "\n".join(event.data)
        if event.event == "closed":
            _say(data, err=True)
            return True
        if event.event == "lost":
            missed = json.loads(data).get("missed", "?")
            _say(
                f"warning: {missed} requests were dropped before they could be forwarded", err=True
            )
        elif event.event == "request":
            request = json.loads(data)
            delivery = send(self.target, request)
            if event.id:
                self.position.save(event.id)
            self.forwarded += 1
            _say(delivery_line(request, self.target, delivery))
        return False


def cmd_forward(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup webhook forward TOKEN URL``: re-send every captured request to URL, live."""
    target = Target.parse(args.target)
    position = Position.load(_position_path(client.url, args.token))
    if args.replay_from or args.from_now:
        position.forget()
    forwarder = Forwarder(client, args.token, target, position, replay_from=args.replay_from)
    try:
        return forwarder.run()
    except KeyboardInterrupt:
        _say(f"Stopped after forwarding {forwarder.forwarded} requests.", err=True)
        return 130


def cmd_replay(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup webhook replay TOKEN REQUEST_ID --to URL``: re-send one captured request."""
    target = Target.parse(args.to)
    token, request_id = quote(args.token, safe=""), quote(args.request_id, safe="")
    request = client.request("GET", f"/webhook/{token}/requests/{request_id}")
    delivery = send(target, request)
    _say(delivery_line(request, target, delivery))
    return 0 if delivery.status is not None else 1


def add_webhook_commands(actions: Any, common: argparse.ArgumentParser) -> None:  # noqa: ANN401
    """Add ``forward`` and ``replay`` to ``spinup webhook`` (``actions``: its subparsers)."""
    forward = actions.add_parser(
        "forward",
        parents=[common],
        help="re-send every captured request to a local URL, live",
        description="Follow the receiver and re-send each request it captures to URL (same"
        " method, path below the receive URL, query, headers and body), printing one line each."
        " Resumes after a dropped connection, and where the last run stopped, so no request"
        " is missed or sent twice.",
    )
    forward.add_argument("token", help="the webhook receiver's token")
    # Not `url`: that is the API's (--url, from `common`).
    forward.add_argument(
        "target", metavar="URL", help="where to send them, e.g. http://localhost:3000/hooks"
    )
    start = forward.add_mutually_exclusive_group()
    start.add_argument(
        "--replay-from",
        metavar="ID",
        help="first re-send the kept request with this id and every one after it",
    )
    start.add_argument(
        "--from-now",
        action="store_true",
        help="ignore where the last run stopped: only requests received from now on",
    )
    forward.set_defaults(handler=cmd_forward)

    replay = actions.add_parser(
        "replay",
        parents=[common],
        help="re-send one captured request to a URL",
        description="Send one captured request again, from this machine, exactly as captured.",
    )
    replay.add_argument("token", help="the webhook receiver's token")
    replay.add_argument("request_id", metavar="REQUEST_ID", help="its id (X-Webhook-Request-Id)")
    replay.add_argument("--to", required=True, metavar="URL", help="where to send it")
    replay.set_defaults(handler=cmd_replay)
