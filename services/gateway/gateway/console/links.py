"""Where the console's pages are; the API's responses link to them (``console_url``).

A resource's page is reached by its token in the URL's fragment (``#spn_…``): a browser never
sends a fragment to a server nor in a Referer, so the token is in no access log of the gateway
or of a proxy in front of it. The page's script reads it and calls the JSON API with it.
"""

from __future__ import annotations

from shared.contracts.kinds import ResourceKind

DASHBOARD_PATH = "/console"
RESOURCE_PAGE_PATH = "/console/resource"
WEBHOOK_PAGE_PATH = "/console/webhook"
STACK_PAGE_PATH = "/console/stack"
_PAGES = {ResourceKind.WEBHOOK: WEBHOOK_PAGE_PATH, ResourceKind.STACK: STACK_PAGE_PATH}


def console_url(public_url: str, kind: ResourceKind | None, token: str) -> str:
    """The console page of the resource this token names (a webhook's inspector, a stack's page)."""
    page = _PAGES.get(kind, RESOURCE_PAGE_PATH) if kind is not None else RESOURCE_PAGE_PATH
    return f"{public_url}{page}#{token}"
