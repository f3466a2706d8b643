"""Session fixtures: one real stack (Postgres x2, Redis, NATS, every service) for the whole run.

The stack is started by the project's own ``devstack`` from a fresh ``.spinup/test``; if any
server cannot start, every test that needs it fails (never skips).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from devstack.seaweed import weed_binary
from devstack.stack import Stack
from pg_provisioner.driver import PostgresDriver
from shared.observability.metrics import USAGE_MEASURED, USAGE_MEASURES, USAGE_STANDING
from shared.usage_memo import UsageMemo
from storage_provisioner.driver import FilerIamTarget, S3Driver, WeedShell

REPO_ROOT = Path(__file__).resolve().parents[1]


#: Files that use the container engine, or restart it (test_containment): `make test` runs them
#: as a group of their own beside everything else (scripts/test.sh, SPINUP_TEST_GROUP), so no
#: other test is using the engine when it restarts. A new file that deploys stacks goes here.
ENGINE_GROUP = (
    "tests/browser/",
    "tests/deploy/test_images.py",
    "tests/e2e/test_cli.py",
    "tests/e2e/test_containment.py",
    "tests/e2e/test_every_kind.py",
    "tests/e2e/test_export.py",
    "tests/e2e/test_lifetime.py",
    "tests/e2e/test_mcp.py",
    "tests/e2e/test_openapi.py",
    "tests/e2e/test_secret_scan.py",
    "tests/e2e/test_stacks.py",
    "tests/integration/test_stack_deployer.py",
    # Not the engine's: here to even out the two groups' wall time (the rest took twice as long).
    "tests/e2e/test_api_fuzz.py",
    "tests/e2e/test_bench.py",
    "tests/e2e/test_crashes_and_outages.py",
    "tests/integration/test_storage_reloads.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With SPINUP_TEST_GROUP=engine or rest, keep only that group's tests (scripts/test.sh)."""
    group = os.environ.get("SPINUP_TEST_GROUP")
    if not group:
        return
    if group not in {"engine", "rest"}:
        msg = f"SPINUP_TEST_GROUP must be engine or rest, not {group!r}"
        raise pytest.UsageError(msg)

    def in_engine_group(item: pytest.Item) -> bool:
        path = item.path.relative_to(REPO_ROOT).as_posix()
        return path.startswith(ENGINE_GROUP)

    kept = [item for item in items if in_engine_group(item) == (group == "engine")]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


#: The rest group deploys no stack, so its stack-deployer need not put back the host's firewall
#: chains: if it did, it would race test_containment in the engine group, which wipes them to
#: play a host restart (both groups' stacks share the host's iptables).
REST_GROUP_OVERRIDES = {"SPINUP_STACK_FIREWALL_CHECK_S": str(24 * 3600)}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # Two pytest runs in one checkout need distinct stacks: SPINUP_TEST_STACK=<name> picks one.
    # Every test shares one client address (127.0.0.1): a test stack serves plans.yaml with caps
    # and rate limits raised (Profile.roomy_plans); tests of those start gateways of their own.
    overrides = REST_GROUP_OVERRIDES if os.environ.get("SPINUP_TEST_GROUP") == "rest" else None
    with Stack.for_tests(
        REPO_ROOT, name=os.environ.get("SPINUP_TEST_STACK", "test"), overrides=overrides
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _finalize_each_tests_garbage() -> Iterator[None]:
    # A connection a test forgets to close warns when it is collected. Collected here, the
    # warning (an error: filterwarnings) names the test that leaked it, not whichever later test
    # the collector happened to interrupt.
    yield
    gc.collect()


@pytest.fixture(scope="session")
def env(stack: Stack) -> dict[str, str]:
    return stack.env()


@pytest.fixture(scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
async def platform_db(env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(env["SPINUP_PLATFORM_DSN"], min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def customer_admin(env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(env["SPINUP_CUSTOMER_PG_ADMIN_DSN"])
    yield conn
    await conn.close()


@pytest.fixture
async def nc(env: dict[str, str]) -> AsyncIterator[NatsClient]:
    client = await nats.connect(env["SPINUP_NATS_URL"])
    yield client
    await client.close()


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[PostgresDriver]:
    connected = await PostgresDriver.connect(
        env["SPINUP_CUSTOMER_PG_ADMIN_DSN"],
        public_host=env["SPINUP_CUSTOMER_PG_HOST"],
        public_port=int(env["SPINUP_CUSTOMER_PG_PORT"]),
        pool_size=2,
    )
    yield connected
    await connected.close()


@pytest.fixture
def admin_shell(env: dict[str, str]) -> WeedShell:
    """SeaweedFS's own admin tool, against the session's master and filer."""
    return WeedShell(
        weed=weed_binary(),
        master=env["SPINUP_S3_MASTER"],
        filer=env["SPINUP_S3_FILER"],
        # The servers' security.toml: without its gRPC certificate the shell is refused.
        config_dir=Path(env["SPINUP_S3_CONFIG_DIR"]),
    )


async def connect_s3_driver(
    env: dict[str, str],
    shell: WeedShell,
    *,
    measures: UsageMemo | None = None,
    master_grpc: str | None = None,
) -> S3Driver:
    """An S3 driver as storage-provisioner connects one (a second one: a second replica).

    ``measures`` and ``master_grpc`` replace the usage sweep's memory of its listings and the
    master's address (ADR 0057).
    """
    return await S3Driver.connect(
        endpoint=env["SPINUP_S3_ENDPOINT"],
        public_endpoint=env["SPINUP_S3_PUBLIC_ENDPOINT"],
        region=env["SPINUP_S3_REGION"],
        access_key=env["SPINUP_S3_ADMIN_ACCESS_KEY"],
        secret_key=env["SPINUP_S3_ADMIN_SECRET_KEY"],
        shell=shell,
        filer_read_key=env["SPINUP_S3_FILER_READ_KEY"],
        filer_iam=FilerIamTarget(
            address=env["SPINUP_S3_FILER_GRPC"],
            write_key=env["SPINUP_S3_FILER_WRITE_KEY"],
            certificate=Path(env["SPINUP_S3_CONFIG_DIR"]) / "grpc.crt",
            key=Path(env["SPINUP_S3_CONFIG_DIR"]) / "grpc.key",
        ),
        gateway_grpc=env["SPINUP_S3_GATEWAY_GRPC"],
        master_grpc=master_grpc or env["SPINUP_S3_MASTER_GRPC"],
        measures=measures,
    )


@pytest.fixture
async def s3_driver(env: dict[str, str], admin_shell: WeedShell) -> AsyncIterator[S3Driver]:
    connected = await connect_s3_driver(env, admin_shell)
    yield connected
    await connected.close()


def usage_measures_since(kind: str) -> Callable[[], tuple[float, float]]:
    """How many tenants of ``kind`` this process's usage sweeps measured, and let stand, since."""

    def counts() -> tuple[float, float]:
        return (
            float(USAGE_MEASURES.labels(kind, USAGE_MEASURED)._value.get()),
            float(USAGE_MEASURES.labels(kind, USAGE_STANDING)._value.get()),
        )

    measured, standing = counts()
    return lambda: (counts()[0] - measured, counts()[1] - standing)
