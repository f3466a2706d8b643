"""The HTTP side of the CLI: one small client for the Spinup API, its errors, and the stored login.

Every failure a command can meet is a ``CliError`` carrying the text to print and the exit code,
so ``main`` has one place that turns failures into output.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx

from spinup_cli.dotenv import write_private

DEFAULT_URL = "http://127.0.0.1:8080"

#: Exit codes: 1 the API (or the environment) said no, 2 the command line was wrong.
EXIT_API_ERROR = 1
EXIT_USAGE = 2

# Creating a resource waits for a worker to build it on a real server; a few seconds is normal.
REQUEST_TIMEOUT_S = 60.0
# A deploy uploads its build contexts and provisions every backing resource before it answers.
UPLOAD_TIMEOUT_S = 180.0


class CliError(Exception):
    """A failure to report to the user: ``str(self)`` is the whole message."""

    def __init__(self, message: str, exit_code: int = EXIT_API_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def api_error(response: httpx.Response) -> CliError:
    """The server's error as a ``CliError``: its code, ``message`` and ``agent_action``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:300] or response.reason_phrase
        return CliError(f"HTTP {response.status_code}: {text}")
    lines = [f"error: {body.get('error', response.status_code)}: {body.get('message', '')}"]
    if body.get("agent_action"):
        lines.append(f"what to do: {body['agent_action']}")
    if response.headers.get("retry-after"):
        lines.append(f"retry after: {response.headers['retry-after']} s")
    return CliError("\n".join(lines))


def _attachment_name(response: httpx.Response) -> str | None:
    """The file name of ``Content-Disposition: attachment; filename="..."``, made safe."""
    disposition = response.headers.get("content-disposition", "")
    _, _, name = disposition.partition('filename="')
    name = Path(name.rstrip('"')).name
    return name if name and not name.startswith(".") else None


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/spinup``, or ``~/.config/spinup``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spinup"


def credentials_path() -> Path:
    """The file holding the session tokens of ``spinup login``, one per API URL."""
    return config_dir() / "credentials"


def _read_sessions() -> dict[str, Any]:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        msg = f"{path} is not valid JSON: delete it and run `spinup login` again."
        raise CliError(msg) from None
    return data if isinstance(data, dict) else {}


def stored_session(url: str) -> dict[str, str] | None:
    """The ``{"token", "email"}`` stored by ``spinup login`` for this API URL, if any."""
    session = _read_sessions().get(url)
    return session if isinstance(session, dict) else None


def store_session(url: str, token: str, email: str) -> Path:
    """Keep a session token for this API URL in the credentials file (mode 0600)."""
    sessions = _read_sessions()
    sessions[url] = {"token": token, "email": email}
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start: the token must never sit readable by others, even briefly;
    # an older file made readable by others is narrowed too.
    write_private(path, json.dumps(sessions, indent=2))
    path.chmod(0o600)
    return path


def forget_session(url: str) -> bool:
    """Remove the stored session of this API URL; whether there was one."""
    sessions = _read_sessions()
    if sessions.pop(url, None) is None:
        return False
    credentials_path().write_text(json.dumps(sessions, indent=2))
    return True


def records_path() -> Path:
    """The local record of the resources this machine made, one list per API URL (mode 0600).

    Anonymous resources belong to no account, so this is the only list of them: ``spinup ls``
    shows it, and ``rotate``, ``rm`` and ``new --force`` use it to keep ``.env`` files true and
    never lose a token.
    """
    return config_dir() / "resources.json"


def _read_records() -> dict[str, list[dict[str, Any]]]:
    path = records_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        msg = f"{path} is not valid JSON: move it away (it lists the tokens this machine made)."
        raise CliError(msg) from None
    return data if isinstance(data, dict) else {}


def _write_records(records: dict[str, list[dict[str, Any]]]) -> None:
    path = records_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps(records, indent=2))


def recorded_resources(url: str) -> list[dict[str, Any]]:
    """What this machine made at this API URL and has not deleted, oldest first."""
    return list(_read_records().get(url, []))


def find_record(url: str, token_or_id: str) -> dict[str, Any] | None:
    """The record of the resource with this token or id, if this machine made it."""
    return next(
        (r for r in recorded_resources(url) if token_or_id in {r.get("token"), r.get("id")}), None
    )


def remember_resource(url: str, record: dict[str, Any]) -> None:
    """Add (or update, by id) a resource in the local record."""
    records = _read_records()
    kept = [r for r in records.get(url, []) if r.get("id") != record["id"]]
    records[url] = [*kept, record]
    _write_records(records)


def forget_resource(url: str, resource_id: str) -> dict[str, Any] | None:
    """Drop a deleted resource from the local record; its record, if there was one."""
    records = _read_records()
    listed = records.get(url, [])
    found = next((r for r in listed if r.get("id") == resource_id), None)
    if found is not None:
        records[url] = [r for r in listed if r.get("id") != resource_id]
        _write_records(records)
    return found


@contextmanager
def spinner(label: str) -> Iterator[None]:
    """A small spinner on stderr while a slow call runs; nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        # Quick calls finish before the first frame, so they print nothing at all.
        frames = "|/-\\"
        index = 0
        while not done.wait(0.25 if index == 0 else 0.1):
            sys.stderr.write(f"\r{frames[index % len(frames)]} {label}")
            sys.stderr.flush()
            index += 1
        if index:
            sys.stderr.write("\r" + " " * (len(label) + 2) + "\r")
            sys.stderr.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class SpinupClient:
    """A synchronous client of the Spinup HTTP API.

    ``token`` is sent as ``Authorization: Bearer``: ``SPINUP_TOKEN`` if set, else the session of
    ``spinup login`` for this URL, else none (anonymous).
    """

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_S)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _unreachable(self) -> CliError:
        return CliError(f"Spinup is not reachable at {self.url}: is `make run` going?")

    def request(
        self, method: str, path: str, *, json_body: object = None, slow: str | None = None
    ) -> dict[str, Any]:
        """One call; the decoded JSON body, or ``CliError`` with the server's message.

        ``slow`` is the spinner's label for calls that may take seconds.
        """
        try:
            if slow:
                with spinner(slow):
                    response = self._http.request(method, path, json=json_body)
            else:
                response = self._http.request(method, path, json=json_body)
        except httpx.ConnectError:
            raise self._unreachable() from None
        except httpx.TimeoutException:
            msg = f"Spinup at {self.url} did not answer in time; try again."
            raise CliError(msg) from None
        if response.is_error:
            raise api_error(response)
        body = response.json()
        if not isinstance(body, dict):
            msg = f"Unexpected answer from {self.url}{path}: {response.text[:200]}"
            raise CliError(msg)
        return body

    def upload(
        self, path: str, files: dict[str, tuple[str, bytes]], *, slow: str
    ) -> dict[str, Any]:
        """A multipart upload (field name -> (file name, content)); the decoded JSON body."""
        try:
            with spinner(slow):
                response = self._http.post(path, files=files, timeout=UPLOAD_TIMEOUT_S)
        except httpx.ConnectError:
            raise self._unreachable() from None
        except httpx.TimeoutException:
            msg = f"Spinup at {self.url} did not answer in time; try again."
            raise CliError(msg) from None
        if response.is_error:
            raise api_error(response)
        body: dict[str, Any] = response.json()
        return body

    def require_login(self, action: str) -> None:
        """Refuse early, with what to do, when a command needs an account and has no token."""
        if not self.token:
            msg = (
                f"To {action} you need an account: run `spinup login` (or set SPINUP_TOKEN"
                " to an access token)."
            )
            raise CliError(msg)

    def download(
        self, path: str, params: dict[str, str], target: Path | None
    ) -> tuple[Path | None, int]:
        """Stream a file download into ``target`` (None: the server's file name; ``-``: stdout).

        Written beside the target and renamed at the end, so a download that fails leaves no
        partial file. Returns where it went (None: stdout) and how many bytes.
        """
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(30.0, read=120.0)
            ) as response:
                if response.is_error:
                    response.read()
                    raise api_error(response)
                if target is not None and str(target) == "-":
                    written = 0
                    for piece in response.iter_bytes():
                        sys.stdout.buffer.write(piece)
                        written += len(piece)
                    sys.stdout.buffer.flush()
                    return None, written
                final = target or Path(_attachment_name(response) or "export.bin")
                partial = final.with_name(f".{final.name}.partial")
                written = 0
                try:
                    with partial.open("wb") as out:
                        for piece in response.iter_bytes():
                            out.write(piece)
                            written += len(piece)
                    partial.replace(final)
                finally:
                    partial.unlink(missing_ok=True)
                return final, written
        except httpx.ConnectError:
            raise self._unreachable() from None
        except httpx.TransportError as exc:
            msg = f"The download from {self.url} broke off ({type(exc).__name__}); try again."
            raise CliError(msg) from None

    def stream_events(self, path: str) -> Iterator[tuple[str, str]]:
        """Follow a Server-Sent Events stream: yields ``(event, data)`` until the server ends it."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(10.0, read=None)) as response:
                if response.is_error:
                    response.read()
                    raise api_error(response)
                event, data = "message", list[str]()
                for line in response.iter_lines():
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = "message", list[str]()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    # Lines starting with ':' are keep-alive comments.
        except httpx.ConnectError:
            raise self._unreachable() from None
