"""Building against a receiver from a laptop: find requests, forward them live, replay them.

The sender and the local app are raw HTTP on sockets, so what the app receives can be compared
byte for byte with what was sent to the receive URL; the forwarder is the installed ``spinup``
command, killed and restarted, and cut off from the gateway by a proxy that drops connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from spinup_cli.main import main

from devstack.stack import Stack
from shared.testing.polling import eventually
from tests.e2e.test_mcp import answer, refusal, stdio_mcp
from tests.e2e.test_webhook import (
    BINARY,
    new_receiver,
    next_event,
    read_events,
    receive_url,
    requests_of,
)

pytestmark = pytest.mark.e2e

SPINUP = Path(sys.executable).parent / "spinup"


@dataclass(frozen=True)
class Sent:
    """A request as written on the wire to the receive URL, and the id the receiver gave it."""

    method: str
    target: str  # path below the receive URL, with its query
    headers: list[tuple[str, str]]
    body: bytes
    id: str = ""


@dataclass(frozen=True)
class Arrived:
    """A request as the local app read it off its socket."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


async def send_raw(url: str, sent: Sent) -> Sent:
    """Write ``sent`` to the receive URL on a socket of its own; ``sent`` with the stored id."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"{sent.method} {parts.path}{sent.target} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{name}: {value}" for name, value in sent.headers]
    head += ["Connection: close", "", ""]
    writer.write("\r\n".join(head).encode("latin-1") + sent.body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.split()[1] == b"200", response[:500]
    headers = dict(
        line.decode().lower().split(": ", 1) for line in rest.split(b"\r\n\r\n")[0].split(b"\r\n")
    )
    return Sent(sent.method, sent.target, sent.headers, sent.body, headers["x-webhook-request-id"])


@dataclass
class LocalApp:
    """A local HTTP server that records every request exactly as its bytes came in."""

    arrived: list[Arrived] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [
                    (name.lower(), value.strip())
                    for name, value in (line.split(":", 1) for line in lines)
                ]
                length = next((int(v) for n, v in headers if n == "content-length"), 0)
                body = await reader.readexactly(length)
                self.arrived.append(Arrived(method, target, headers, body))
                status = b"202 Accepted" if target.endswith("/accept") else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int) -> list[Arrived]:
        async def enough() -> bool:
            return len(self.arrived) >= count

        assert await eventually(enough, within=30, interval=0.05), f"{len(self.arrived)} of {count}"
        return self.arrived[:count]


@pytest.fixture
async def local_app() -> AsyncIterator[LocalApp]:
    app = LocalApp()
    server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    app.port = server.sockets[0].getsockname()[1]
    async with server:
        yield app


@dataclass
class DroppingProxy:
    """A TCP proxy to the gateway whose open connections the test can cut at any moment."""

    upstream: tuple[str, int]
    port: int = 0
    open: set[asyncio.StreamWriter] = field(default_factory=set)
    drops: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.open -= {writer, up_writer}

    def drop_all(self) -> None:
        """Cut every connection now, as a network drop does (no goodbye on either side)."""
        for writer in self.open:
            writer.transport.abort()
        self.drops += 1


@pytest.fixture
async def proxy(stack: Stack) -> AsyncIterator[DroppingProxy]:
    parts = urlsplit(stack.gateway_url)
    assert parts.hostname is not None
    assert parts.port is not None
    dropping = DroppingProxy((parts.hostname, parts.port))
    server = await asyncio.start_server(dropping.handle, "127.0.0.1", 0)
    dropping.port = server.sockets[0].getsockname()[1]
    async with server:
        yield dropping
        dropping.drop_all()


@dataclass
class Cli:
    """The installed ``spinup`` in a HOME of its own, against one API URL."""

    home: Path
    api_url: str

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            SPINUP,
            *args,
            cwd=self.home,
            env={
                **os.environ,
                "SPINUP_URL": self.api_url,
                "HOME": str(self.home),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str) -> tuple[int, str, str]:
        process = await self.start(*args)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def forwarding(cli: Cli, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``spinup webhook forward ...`` running, once it says its stream is open."""
    process = await cli.start("webhook", "forward", *args)
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        if b"Forwarding requests to" not in line:
            process.kill()
            pytest.fail((line + await process.stderr.read()).decode())
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def printed_lines(process: asyncio.subprocess.Process, count: int) -> list[str]:
    assert process.stdout is not None
    return [
        (await asyncio.wait_for(process.stdout.readline(), 30)).decode().rstrip()
        for _ in range(count)
    ]


def variety() -> list[Sent]:
    """Requests a provider might send: JSON, repeated headers, binary, no body, odd paths."""
    json_body = b'{"type": "invoice.paid", "data": {"amount": 4200, "note": "w\xc3\xb6rld"}}'
    return [
        Sent(
            "POST",
            "/stripe?x=1&x=2&empty=",
            [
                ("Content-Type", "application/json"),
                ("Stripe-Signature", "t=1,v1=abc"),
                ("X-Dup", "first"),
                ("X-Dup", "second"),
                ("Content-Length", str(len(json_body))),
            ],
            json_body,
        ),
        Sent(
            "PUT",
            "/files/blob",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BINARY)))],
            BINARY,
        ),
        Sent("GET", "/", [("Accept", "*/*"), ("X-Dup", "a"), ("X-Dup", "a")], b""),
        Sent(
            "DELETE",
            "/odd%20path/%C3%A9?q=a%26b",
            [("X-Latin", "caf\xe9"), ("Content-Length", "0")],
            b"",
        ),
    ]


def assert_forwarded_exactly(arrived: Arrived, sent: Sent, prefix: str = "/hooks") -> None:
    """The local app got what the sender sent: method, path, query, headers, body bytes."""
    path, _, query = sent.target.partition("?")
    expected_target = prefix + ("" if path == "/" else path) + (f"?{query}" if query else "")
    assert (arrived.method, arrived.target) == (sent.method, expected_target)
    # Host names the local app now; Connection is per hop. Everything else, in order, repeats
    # kept; names arrive lowercase (HTTP names are case-insensitive), values byte for byte.
    expected = [(n.lower(), v) for n, v in sent.headers]
    assert [h for h in arrived.headers if h[0] != "host"] == expected
    assert arrived.body == sent.body


# ------------------------------------------------------------------------- find requests ----


async def test_filters_and_cursors_return_exactly_the_matching_requests(
    http: httpx.AsyncClient,
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    plan: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/stripe/events", {"x-event": "invoice.paid"}, b'{"needle": 1}'),
        ("PUT", "/github", {"X-GitHub-Event": "push"}, b"plain"),
        ("POST", "/stripe", {"x-event": "charge.failed"}, BINARY + b"needle"),
        ("GET", "/", {}, b""),
        ("PATCH", "/github/hook", {"X-GitHub-Event": "issues"}, b"needle in text"),
        ("POST", "/other", {}, b"\xff\xfe binary without it"),
        ("DELETE", "/stripe", {"x-event": "invoice.paid"}, b""),
    ]
    ids = []
    for method, path, headers, body in plan:
        sent = await http.request(method, f"{url}{path}", headers=headers, content=body)
        assert sent.status_code == 200, sent.text
        ids.append(sent.headers["x-webhook-request-id"])
    newest_first = ids[::-1]

    # Every page is newest first; following next_cursor sees each request exactly once.
    for limit in (1, 2, 3, 7, 50):
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = await http.get(f"/webhook/{token}/requests", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["count"] == len(body["requests"]) <= limit
            seen += [r["id"] for r in body["requests"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first, limit

    async def matching(**params: Any) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            paged = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await http.get(f"/webhook/{token}/requests", params=paged)).json()
            found += [r["id"] for r in body["requests"]]
            if (cursor := body["next_cursor"]) is None:
                return found

    def expect(*positions: int) -> list[str]:
        return [ids[p] for p in sorted(positions, reverse=True)]

    assert await matching(method="POST") == expect(0, 2, 5)
    assert await matching(method="put,Patch") == expect(1, 4)
    assert await matching(path_prefix="/stripe") == expect(0, 2, 6)
    assert await matching(path_prefix="/github/") == expect(4)
    assert await matching(header="X-EVENT: invoice.paid") == expect(0, 6)
    assert await matching(header="x-github-event") == expect(1, 4)
    # The body is searched in its raw bytes, binary ones too.
    assert await matching(body="needle") == expect(0, 2, 4)
    assert await matching(body="binary without") == expect(5)
    assert await matching(method="POST", body="needle", path_prefix="/stripe") == expect(0, 2)

    stored = {r["id"]: r for r in await requests_of(http, token)}
    assert [stored[i]["seq"] for i in ids] == list(range(1, len(ids) + 1))
    middle = stored[ids[3]]["received_at"]
    assert await matching(since=middle) == expect(3, 4, 5, 6)
    assert await matching(until=middle) == expect(0, 1, 2)
    assert await matching(since=stored[ids[1]]["received_at"], until=middle) == expect(1, 2)

    one = await http.get(f"/webhook/{token}/requests/{ids[2]}")
    assert one.status_code == 200, one.text
    assert (one.json()["id"], one.json()["size"]) == (ids[2], len(BINARY) + 6)
    missing = await http.get(f"/webhook/{token}/requests/{uuid.uuid4().hex}")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"cursor": "not-a-cursor"}, "`cursor`"),
        ({"method": "FETCH"}, "`method`"),
        ({"method": ","}, "`method`"),
        ({"since": "yesterday"}, "`since`"),
        ({"since": "2026-12-04T10:00:00Z", "until": "2026-12-04T09:00:00Z"}, "`until`"),
        ({"header": ""}, "`header`"),
        ({"limit": "0"}, "`limit`"),
    ],
)
async def test_a_bad_query_parameter_is_a_400_that_names_it(
    http: httpx.AsyncClient, params: dict[str, str], named: str
) -> None:
    receiver = await new_receiver(http)
    refused = await http.get(f"/webhook/{receiver['token']}/requests", params=params)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert named in refused.json()["message"]


async def test_the_stream_resumes_from_a_cursor_and_says_what_was_dropped(
    http: httpx.AsyncClient,
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    kept = receiver["limits"]["requests_kept"]
    await http.post(url, content=b"before")
    start = (await http.get(f"/webhook/{token}/requests", params={"limit": 1})).json()
    for n in range(3):
        await http.post(url, content=f"while away {n}".encode())

    async def events_of(
        params: dict[str, str], headers: dict[str, str], count: int
    ) -> list[dict[str, str]]:
        events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        stream = f"/webhook/{token}/stream"
        async with http.stream("GET", stream, params=params, headers=headers) as response:
            assert response.status_code == 200
            reader = asyncio.create_task(read_events(response, events))
            try:
                return [await next_event(events) for _ in range(count)]
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    caught_up = await events_of({"after": start["latest_cursor"]}, {}, 3)
    assert [json.loads(e["data"])["body"] for e in caught_up] == [
        f"while away {n}" for n in range(3)
    ]
    # Resumed with the last id seen (as EventSource does): nothing again, then what is new.
    await http.post(url, content=b"after the drop")
    resumed = await events_of({}, {"Last-Event-ID": caught_up[-1]["id"]}, 1)
    assert json.loads(resumed[0]["data"])["body"] == "after the drop"
    # More than requests_kept came in meanwhile: the oldest are gone, and the stream says so.
    for n in range(kept + 2):
        await http.post(url, content=str(n).encode())
    lost, first = await events_of({}, {"Last-Event-ID": resumed[0]["id"]}, 2)
    assert lost["event"] == "lost"
    assert json.loads(lost["data"])["missed"] == 2
    assert json.loads(first["data"])["body"] == "2"
    # from_id starts with that request; an id no longer kept is a 400 naming from_id.
    oldest = (await requests_of(http, token))[-1]
    (again,) = await events_of({"from_id": oldest["id"]}, {}, 1)
    assert json.loads(again["data"])["id"] == oldest["id"]
    gone = await http.get(f"/webhook/{token}/stream", params={"from_id": uuid.uuid4().hex})
    assert gone.status_code == 400
    assert "`from_id`" in gone.json()["message"]
    bad = await http.get(f"/webhook/{token}/stream", headers={"Last-Event-ID": "nope"})
    assert bad.status_code == 400
    assert "`Last-Event-ID`" in bad.json()["message"]


# ------------------------------------------------------------------------------ forward ----


async def test_forward_delivers_byte_for_byte_and_resumes_after_a_restart(
    stack: Stack, http: httpx.AsyncClient, local_app: LocalApp, tmp_path: Path
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    cli = Cli(tmp_path, stack.gateway_url)
    first = variety()

    async with forwarding(cli, token, local_app.url()) as forwarder:
        sent = [await send_raw(url, request) for request in first]
        for arrived, original in zip(await local_app.wait_for(len(sent)), sent, strict=True):
            assert_forwarded_exactly(arrived, original)
        lines = await printed_lines(forwarder, len(sent))
        for line, original in zip(lines, sent, strict=True):
            # time, method, path, local status, milliseconds
            fields = line.split()
            assert fields[1] == original.method, line
            assert fields[2].startswith("/hooks"), line
            assert fields[3:5] == ["->", "200"], line
            assert fields[-1] == "ms", line
        # Killed outright (no goodbye), after its last line: the position was saved before it.
        forwarder.send_signal(signal.SIGKILL)
        await forwarder.wait()

    while_down = [
        await send_raw(url, Sent("POST", f"/down/{n}", [("Content-Length", "1")], b"d"))
        for n in range(3)
    ]
    async with forwarding(cli, token, local_app.url()) as forwarder:
        marker = await send_raw(url, Sent("POST", "/accept", [("Content-Length", "1")], b"m"))
        after_restart = (await local_app.wait_for(len(sent) + 4))[len(sent) :]
        # Exactly the ones sent while it was down, once each, in order, then the live one.
        for got, original in zip(after_restart, [*while_down, marker], strict=True):
            assert_forwarded_exactly(got, original)
        (*_, last) = await printed_lines(forwarder, 4)
        assert "-> 202" in last
    assert len(local_app.arrived) == len(sent) + 4


async def test_forward_survives_dropped_connections_without_loss_or_duplicates(
    stack: Stack,
    http: httpx.AsyncClient,
    local_app: LocalApp,
    proxy: DroppingProxy,
    tmp_path: Path,
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    cli = Cli(tmp_path, f"http://127.0.0.1:{proxy.port}")
    sent: list[Sent] = []

    async def send(n: int) -> None:
        body = f"request {n}".encode()
        request = Sent("POST", f"/n/{n}", [("Content-Length", str(len(body)))], body)
        sent.append(await send_raw(url, request))

    async with forwarding(cli, token, local_app.url()) as forwarder:
        assert forwarder.stderr is not None
        for n in range(2):
            await send(n)
        await local_app.wait_for(2)
        for drop in range(3):
            proxy.drop_all()
            # Sent while the forwarder has no stream: it must fetch these when it is back.
            for _ in range(3):
                await send(len(sent))
            reconnected = await asyncio.wait_for(forwarder.stderr.readline(), 30)
            assert b"connection lost" in reconnected, reconnected
            assert b"Reconnected" in await asyncio.wait_for(forwarder.stderr.readline(), 30)
            await local_app.wait_for(len(sent))
            assert proxy.drops == drop + 1
        await send(len(sent))
        await local_app.wait_for(len(sent))
    assert [a.target for a in local_app.arrived] == [f"/hooks{s.target}" for s in sent]
    assert [a.body for a in local_app.arrived] == [s.body for s in sent]


async def test_replay_and_replay_from_send_the_same_bytes_again(
    stack: Stack, http: httpx.AsyncClient, local_app: LocalApp, tmp_path: Path
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    cli = Cli(tmp_path, stack.gateway_url)
    sent = [await send_raw(url, request) for request in variety()]

    code, out, err = await cli.run(
        "webhook", "replay", token, sent[1].id, "--to", local_app.url("/again")
    )
    assert code == 0, err
    assert " PUT " in out
    assert "-> 200" in out
    (replayed,) = await local_app.wait_for(1)
    assert_forwarded_exactly(replayed, sent[1], prefix="/again")

    async with forwarding(cli, token, local_app.url(), "--replay-from", sent[2].id) as forwarder:
        history = await local_app.wait_for(3)
        assert_forwarded_exactly(history[1], sent[2])
        assert_forwarded_exactly(history[2], sent[3])
        live = await send_raw(url, Sent("PATCH", "/live", [("Content-Length", "2")], b"ok"))
        assert_forwarded_exactly((await local_app.wait_for(4))[3], live)
        await printed_lines(forwarder, 3)

    code, _, err = await cli.run(
        "webhook", "replay", token, uuid.uuid4().hex, "--to", local_app.url()
    )
    assert code == 1
    assert "not_found" in err
    code, _, err = await cli.run("webhook", "replay", token, sent[0].id, "--to", "ftp://x")
    assert code == 2
    assert "http(s)" in err
    # Nothing listens there: the line says so and the exit code is 1.
    code, out, _ = await cli.run(
        "webhook", "replay", token, sent[0].id, "--to", "http://127.0.0.1:9/closed"
    )
    assert code == 1
    assert "failed" in out


# ---------------------------------------------------------------------------------- MCP ----


async def test_mcp_tools_find_requests_set_the_response_and_the_verification(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    receiver = await new_receiver(http)
    token, url = receiver["token"], receive_url(receiver)
    for path, text in (("/stripe", "invoice.paid"), ("/github", "push"), ("/stripe", "refund")):
        assert (await http.post(f"{url}{path}", content=text)).status_code == 200
    async with stdio_mcp(stack.gateway_url) as client:
        found = answer(
            await client.call_tool(
                "find_webhook_requests", {"resource": token, "path_prefix": "/stripe", "limit": 1}
            )
        )
        assert [r["body"] for r in found["requests"]] == ["refund"]
        older = answer(
            await client.call_tool(
                "find_webhook_requests",
                {"resource": token, "path_prefix": "/stripe", "cursor": found["next_cursor"]},
            )
        )
        assert [r["body"] for r in older["requests"]] == ["invoice.paid"]
        assert older["next_cursor"] is None
        text, body = refusal(
            await client.call_tool("find_webhook_requests", {"resource": token, "since": "soon"})
        )
        assert body["error"] == "invalid_request"
        assert "`since`" in text

        answer(
            await client.call_tool(
                "set_webhook_response",
                {"resource": token, "status": 201, "body": "created", "headers": {"X-A": "b"}},
            )
        )
        custom = await http.post(url, content=b"x")
        assert (custom.status_code, custom.text, custom.headers["x-a"]) == (201, "created", "b")
        answer(await client.call_tool("set_webhook_response", {"resource": token, "reset": True}))
        assert (await http.post(url, content=b"x")).json()["ok"] is True

        secret = "spinup-e2e-mcp-github-secret"
        shown = answer(
            await client.call_tool(
                "set_webhook_verification",
                {"resource": token, "scheme": "github", "secret": secret},
            )
        )
        assert shown["scheme"] == "github"
        assert secret not in json.dumps(shown)
        await http.post(url, content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"})
        checked = answer(
            await client.call_tool("find_webhook_requests", {"resource": token, "limit": 1})
        )
        assert checked["requests"][0]["signature"]["status"] == "invalid"
        off = answer(
            await client.call_tool("set_webhook_verification", {"resource": token, "scheme": "off"})
        )
        assert off["scheme"] is None


@pytest.mark.parametrize("action", ["forward", "replay"])
def test_help_of_the_webhook_commands(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", action, "--help"]) == 0
    assert "URL" in capsys.readouterr().out


async def test_the_filters_and_the_resume_header_are_in_the_openapi_document(
    http: httpx.AsyncClient,
) -> None:
    paths = (await http.get("/schema/openapi.json")).json()["paths"]

    def parameters(path: str) -> set[tuple[str, str]]:
        return {(p["in"], p["name"]) for p in paths[path]["get"]["parameters"]}

    assert {
        ("query", name)
        for name in ("limit", "cursor", "method", "path_prefix", "header", "body", "since", "until")
    } <= parameters("/webhook/{token}/requests")
    assert {("query", "after"), ("query", "from_id"), ("header", "Last-Event-ID")} <= parameters(
        "/webhook/{token}/stream"
    )
    assert "get" in paths["/webhook/{token}/requests/{request_id}"]
