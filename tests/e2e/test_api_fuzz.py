"""The whole HTTP API fuzzed from its own OpenAPI document (schemathesis), against the stack.

Every operation is called with values its schema allows and with values it does not: no answer
may be a 5xx the platform did not mean (``not_a_server_error``), and every answer, errors
included, must have a status, content type and body its OpenAPI document declares. That last
part is only as strong as the document, so a second test holds the document to the error
contract: every error status an operation declares has the error body the app sends (which
statuses each declares is test_openapi.py's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from gateway.errors import HTTP_STATUS
from tests.e2e.conftest import PASSWORD, new_email

pytestmark = pytest.mark.e2e

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
# Small, so the whole fuzz stays within about a minute in `make test`; raise it by hand
# (SPINUP_FUZZ_EXAMPLES) for a longer search.
EXAMPLES_PER_OPERATION = os.environ.get("SPINUP_FUZZ_EXAMPLES", "5")
# About 40 s each on an idle machine; the margin is for a machine shared with other work.
FUZZ_TIMEOUT_S = 280
ERROR_SCHEMAS = {"#/components/schemas/ErrorBody", "#/components/schemas/NeonError"}


def run_schemathesis(gateway_url: str, workdir: Path, *extra: str) -> None:
    """Fuzz every operation once with ``extra`` options; fail with schemathesis' own report.

    ``workdir``: where schemathesis may keep its caches (not the checkout).
    """
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{gateway_url}/schema/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        EXAMPLES_PER_OPERATION,
        # One worker: Hypothesis' lambda descriptions are not thread-safe (a runtime error).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--no-color",
        *extra,
    ]
    done = subprocess.run(  # noqa: S603 - our own virtualenv's schemathesis
        command, cwd=workdir, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]


@pytest.mark.timeout(FUZZ_TIMEOUT_S + 20)
async def test_anonymous_fuzz_finds_no_server_error_and_only_documented_answers(
    stack: Stack, tmp_path: Path
) -> None:
    # The live stream never ends for a real receiver; an unknown token is covered below.
    run_schemathesis(stack.gateway_url, tmp_path, "--exclude-path", "/webhook/{token}/stream")


@pytest.mark.timeout(FUZZ_TIMEOUT_S + 20)
async def test_fuzz_with_an_access_token_reaches_the_account_routes(
    stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    email = new_email("fuzz")
    registered = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    session = registered.json()["token"]
    issued = await http.post(
        "/auth/tokens",
        json={"name": "fuzz", "scopes": ["provision", "read", "delete"]},
        headers={"Authorization": f"Bearer {session}"},
    )
    assert issued.status_code == 201, issued.text
    # An access token, not the session: the fuzzer's own POST /auth/logout would end a session
    # and leave every later operation testing only the 401.
    run_schemathesis(
        stack.gateway_url,
        tmp_path,
        "--header",
        f"Authorization: Bearer {issued.json()['token']}",
        "--include-path-regex",
        "^/(auth|resources|claim|webhook/\\{token\\}/requests)",
    )


async def test_every_declared_error_status_has_the_error_body(
    http: httpx.AsyncClient,
) -> None:
    document: dict[str, Any] = (await http.get("/schema/openapi.json")).json()
    error_statuses = {str(status) for status in HTTP_STATUS.values()}
    undeclared: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "servers":
                continue  # a path item's own servers (tenant content's host), not an operation
            responses = operation["responses"]
            # Each operation lists the errors it can return (test_openapi.py checks which).
            declared = error_statuses & set(responses)
            assert "500" in declared, f"{method.upper()} {path}"
            for status in sorted(declared):
                if (method, path, status) == ("get", "/readyz", "503"):
                    continue  # not ready: its Health body, which says what is down
                body = responses[status].get("content", {}).get("application/json", {})
                if body.get("schema", {}).get("$ref") not in ERROR_SCHEMAS:
                    undeclared.append(f"{method.upper()} {path} {status}")
    assert undeclared == []
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"ok", "error", "message", "request_id"}
