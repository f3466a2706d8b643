"""The HTTP side of the MCP server: one small client for the Spinup API and its errors."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"

# Creating a resource waits for a worker to build it on a real server; a few seconds is normal.
REQUEST_TIMEOUT_S = 60.0


class ApiError(Exception):
    """The API said no (or could not be reached); ``str(self)`` is what the agent reads.

    ``body`` is the server's error body (``error, message, request_id, agent_action``) when it
    sent one, so a client can match on the stable ``error`` code.
    """

    def __init__(self, text: str, body: dict[str, Any]) -> None:
        super().__init__(text)
        self.body = body


def _api_error(response: httpx.Response) -> ApiError:
    """The server's error, its ``message`` and ``agent_action`` first: what the agent acts on."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:300] or response.reason_phrase
        return ApiError(
            f"HTTP {response.status_code} from the Spinup API: {text}",
            {"ok": False, "error": f"http_{response.status_code}", "message": text},
        )
    lines = [str(body.get("message") or response.reason_phrase)]
    if body.get("agent_action"):
        lines.append(f"What to do: {body['agent_action']}")
    if response.headers.get("retry-after"):
        lines.append(f"Retry after {response.headers['retry-after']} s.")
        body = {**body, "retry_after_s": int(response.headers["retry-after"])}
    lines.append(
        f"(error code {body.get('error', 'unknown')}, HTTP {response.status_code},"
        f" request_id {body.get('request_id', '-')})"
    )
    return ApiError("\n".join(lines), body)


@cache
def _sse_events(text: str) -> list[dict[str, Any]]:
    """A finished Server-Sent Events body as ``[{event, data}]`` (JSON data decoded)."""
    events: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    # A blank line ends an event; splitlines takes \n, \r\n and \r alike, as SSE allows.
    for line in [*text.splitlines(), ""]:
        if line:
            key, _, value = line.partition(":")
            if key in {"event", "data"}:
                fields[key] = value.removeprefix(" ")
            continue
        if "data" in fields:
            try:
                data: Any = json.loads(fields["data"])
            except ValueError:
                data = fields["data"]
            events.append({"event": fields.get("event", "message"), "data": data})
        fields = {}
    return events


def user_agent() -> str:
    """``spinup-mcp/<version>``; the installed metadata is read once, not on every call."""
    return f"spinup-mcp/{version('spinup')}"


def segment(value: str) -> str:
    """``value`` as one path segment, whatever characters it holds."""
    return quote(value.strip(), safe="")


@dataclass(frozen=True, slots=True)
class SpinupApi:
    """Where the API is and who is asking: ``token`` is a session JWT or ``spp_`` access token."""

    base_url: str
    token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SpinupApi:
        """``SPINUP_URL`` (default the local ``make run``) and ``SPINUP_TOKEN`` (optional)."""
        return cls(
            base_url=(environ.get("SPINUP_URL") or DEFAULT_URL).rstrip("/"),
            token=environ.get("SPINUP_TOKEN") or None,
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> dict[str, Any]:
        """One request; the JSON body of a 2xx answer (``files``: a multipart upload).

        ``token`` overrides ``SPINUP_TOKEN`` for this request.

        Raises:
            ApiError: the server answered with an error, or could not be reached.
        """
        sent_headers = {"User-Agent": user_agent(), **(headers or {})}
        bearer = token or self.token
        if bearer:
            sent_headers["Authorization"] = f"Bearer {bearer}"
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, timeout=REQUEST_TIMEOUT_S
            ) as client:
                response = await client.request(
                    method, path, json=json, params=params, headers=sent_headers, files=files
                )
        except httpx.HTTPError as exc:
            text = (
                f"Cannot reach the Spinup API at {self.base_url} ({type(exc).__name__}: {exc})."
                "\nWhat to do: check that the platform is running and that SPINUP_URL points at"
                " it, then try again."
            )
            raise ApiError(text, {"ok": False, "error": "unreachable", "message": text}) from exc
        if response.is_error:
            raise _api_error(response)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return {"events": _sse_events(response.text)}
        body = response.json()
        if not isinstance(body, dict):  # pragma: no cover  (every route answers an object)
            msg = f"Unexpected answer from {path}: {response.text[:300]}"
            raise ApiError(msg, {"ok": False, "error": "unexpected_answer", "message": msg})
        if response.headers.get("idempotent-replayed") == "true":
            body = {**body, "replayed": True}
        return body
