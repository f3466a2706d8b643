"""Tenant content on a host of its own, the API and console on another (ADR 0067).

Stack apps (``/apps/``) and webhook receivers (``/webhook/receive/``) serve what tenants wrote
or what anyone sent them. A browser sends a host's cookies with every request to that host,
whatever the port, so on the console's host a tenant's app would be sent a visitor's console
session, and its scripts would run as the console's origin. Each family is therefore served
on its own host only: content on ``SPINUP_CONTENT_URL``'s, everything else on the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response
from litestar.response import Redirect

from shared.contracts.errors import ErrorCode, SpinupError

#: Path prefixes of tenant content: a stack's services, and what senders post to receivers.
CONTENT_PREFIXES = ("/apps/", "/webhook/receive/")


def _hostname(host_header: str) -> str | None:
    """The host name of a ``Host`` header (lower case, without its port)."""
    return urlsplit(f"//{host_header}").hostname


def content_origin_guard(public_url: str, content_url: str) -> Any:  # noqa: ANN401  (a hook)
    """The app's ``before_request`` hook that keeps each family of routes on its own host.

    Content asked on another host is redirected (308: method and body kept) to the content
    host, where no console cookie is sent; anything else asked on the content host is a 404.
    """
    content_host = urlsplit(content_url).hostname

    async def keep_content_on_its_host(request: Request[Any, Any, Any]) -> Response[Any] | None:
        host = _hostname(request.headers.get("host", ""))
        if request.scope["path"].startswith(CONTENT_PREFIXES):
            if host == content_host:
                return None
            raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
            query: bytes = request.scope.get("query_string", b"")
            target = content_url + raw.decode("latin-1")
            if query:
                target += "?" + query.decode("latin-1")
            return Redirect(target, status_code=308)
        if host == content_host:
            msg = (
                f"{host} serves stack apps and webhook receivers only; the API and the"
                f" console are at {public_url}."
            )
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        return None

    return keep_content_on_its_host
