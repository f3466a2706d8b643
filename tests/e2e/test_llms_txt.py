"""``GET /llms.txt``: a plain-text guide for agents, drawn from what the API really does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from gateway.errors import HTTP_STATUS
from gateway.resources.routes import KIND_ROUTES
from tests.e2e.conftest import gateway_with_plans

pytestmark = pytest.mark.e2e


async def guide(http: httpx.AsyncClient) -> str:
    response = await http.get("/llms.txt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    return response.text


async def test_the_guide_names_every_create_route_field_and_error_code(
    http: httpx.AsyncClient,
) -> None:
    text = await guide(http)
    for route in KIND_ROUTES:
        assert f"POST /{route.path}/new" in text, route.path
    for field in ("token", "connection_url", "credentials", "expires_at", "claim_url"):
        assert f"`{field}`" in text, field
    for route_text in ("GET /resources/{token}", "DELETE /resources/{token}", "POST /claim"):
        assert route_text in text
    assert "Idempotency-Key" in text
    assert "agent_action" in text
    for code in HTTP_STATUS:
        assert f"`{code.value}`" in text, code


async def test_the_limits_are_those_of_get_plans(http: httpx.AsyncClient) -> None:
    text = await guide(http)
    plans = (await http.get("/plans")).json()
    for name, tier in plans["tiers"].items():
        assert f"### {name}\n" in text, name
        section = text.split(f"### {name}\n", 1)[1].split("###", 1)[0]
        caps = tier["caps"]
        assert f"active_per_kind={caps['active_per_kind']}" in section
        assert f"storage_mb={tier['postgres']['storage_mb']}" in section
    anonymous = plans["tiers"][plans["anonymous_tier"]]
    assert f"{anonymous['ttl_seconds']} s" in text


async def test_no_tier_name_is_written_in_the_guide_itself(
    stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Served from plans whose tiers all have other names and another TTL: none of the shipped
    # names may remain, so every tier name and number in the text comes from the plans.
    shipped = (await http.get("/plans")).json()
    renamed = {name: f"tier{index}" for index, name in enumerate(shipped["tiers"])}

    def rename(plans: dict[str, Any]) -> None:
        plans["tiers"] = {renamed[name]: tier for name, tier in plans["tiers"].items()}
        for new_name, tier in plans["tiers"].items():
            tier["description"] = f"The tier called {new_name}."
        plans["anonymous_tier"] = renamed[plans["anonymous_tier"]]
        plans["account_tier"] = renamed[plans["account_tier"]]
        plans["tiers"][plans["anonymous_tier"]]["ttl_seconds"] = 4321

    with gateway_with_plans(stack, tmp_path, rename) as gateway:
        async with httpx.AsyncClient(base_url=str(gateway.url), timeout=30) as other:
            text = await guide(other)
    for name in shipped["tiers"]:
        assert not re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE), name
    for new_name in renamed.values():
        assert f"### {new_name}\n" in text
    assert "4321 s" in text
