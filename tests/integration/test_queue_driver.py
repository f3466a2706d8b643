import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from devstack.stack import Stack
from queue_provisioner.driver import MIB, NatsAccountDriver
from shared import natsjwt
from shared.contracts.errors import BackendUnavailableError, DropRefusedError
from shared.contracts.kinds import NatsCredentials, NatsLimits
from shared.naming import tenant_name

pytestmark = pytest.mark.integration

LIMITS = NatsLimits(
    connections=3,
    streams=2,
    consumers=4,
    memory_storage_mb=1,
    disk_storage_mb=2,
    max_payload_kb=8,
)


def operator_seed(env: dict[str, str]) -> str:
    return Path(env["SPINUP_CUSTOMER_NATS_OPERATOR_SEED_FILE"]).read_text()


async def connect_driver(env: dict[str, str], url: str | None = None) -> NatsAccountDriver:
    seed = operator_seed(env)
    return await NatsAccountDriver.connect(
        url or env["SPINUP_CUSTOMER_NATS_URL"],
        system_creds=Path(env["SPINUP_CUSTOMER_NATS_SYSTEM_CREDS"]),
        operator_seed=seed,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=2.0,
        name="test-queue-driver",
    )


async def connect_tenant(credentials: NatsCredentials) -> NatsClient:
    client = NatsClient()
    try:
        await client.connect(
            credentials.connection_url,
            user_credentials=RawCredentials(credentials.creds),
            allow_reconnect=False,
        )
    except BaseException:
        # nats-py leaves the socket of a refused first connect open.
        await client.close()
        raise
    return client


@pytest.fixture
async def queue_driver(env: dict[str, str]) -> AsyncIterator[NatsAccountDriver]:
    driver = await connect_driver(env)
    yield driver
    await driver.close()


async def test_create_twice_gives_one_account_with_the_plan_limits_in_the_server(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    first = await queue_driver.create(rid, LIMITS)
    second = await queue_driver.create(rid, LIMITS)
    assert first.account == second.account == queue_driver.account_key(rid).public_key
    assert first.user_seed != second.user_seed
    claims = natsjwt.decode_jwt(second.user_jwt, issuer=second.account)
    assert claims["name"] == tenant_name(rid)
    client = await connect_tenant(second)
    try:
        info = await client.jetstream().account_info()
        assert info.limits.max_streams == LIMITS.streams
        assert info.limits.max_consumers == LIMITS.consumers
        assert info.limits.max_memory == LIMITS.memory_storage_mb * MIB
        assert info.limits.max_storage == LIMITS.disk_storage_mb * MIB
        assert info.limits.max_bytes_required is True
    finally:
        await client.close()
    await queue_driver.delete(rid)


async def test_create_again_with_new_limits_updates_the_account(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    await queue_driver.create(rid, LIMITS)
    bigger = NatsLimits(
        connections=5,
        streams=7,
        consumers=9,
        memory_storage_mb=2,
        disk_storage_mb=3,
        max_payload_kb=16,
    )
    credentials = await queue_driver.create(rid, bigger)
    client = await connect_tenant(credentials)
    try:
        info = await client.jetstream().account_info()
        assert (info.limits.max_streams, info.limits.max_consumers) == (7, 9)
    finally:
        await client.close()
    await queue_driver.delete(rid)


async def test_delete_is_idempotent_and_removes_the_account_from_the_resolver(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    credentials = await queue_driver.create(rid, LIMITS)
    assert await queue_driver.exists(rid)
    await queue_driver.delete(rid)
    await queue_driver.delete(rid)
    assert not await queue_driver.exists(rid)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_tenant(credentials)


async def test_delete_of_a_never_created_account_succeeds(
    queue_driver: NatsAccountDriver,
) -> None:
    rid = uuid.uuid4()
    await queue_driver.delete(rid)
    assert not await queue_driver.exists(rid)


async def test_delete_refuses_the_system_account_and_leaves_it_in_place(
    env: dict[str, str], queue_driver: NatsAccountDriver
) -> None:
    rid = uuid.uuid4()
    await queue_driver.create(rid, LIMITS)
    # A driver that believes this tenant's account is the system account must not delete it.
    confused = NatsAccountDriver(
        queue_driver._system,
        operator=queue_driver._operator,
        system_account=queue_driver.account_key(rid).public_key,
        public_url=env["SPINUP_CUSTOMER_NATS_PUBLIC_URL"],
        request_timeout=2.0,
    )
    with pytest.raises(DropRefusedError):
        await confused.delete(rid)
    assert await queue_driver.exists(rid)
    await queue_driver.delete(rid)


async def test_accounts_of_two_resources_differ(queue_driver: NatsAccountDriver) -> None:
    assert (
        queue_driver.account_key(uuid.uuid4()).public_key
        != queue_driver.account_key(uuid.uuid4()).public_key
    )


async def test_unreachable_server_is_backend_unavailable(
    stack: Stack, env: dict[str, str], queue_driver: NatsAccountDriver
) -> None:
    closed_port = env["SPINUP_CUSTOMER_NATS_URL"].rsplit(":", 1)[0] + ":1"
    with pytest.raises(BackendUnavailableError):
        await connect_driver(env, closed_port)
    stack.stop_server("customer-nats")
    try:
        with pytest.raises(BackendUnavailableError):
            await queue_driver.create(uuid.uuid4(), LIMITS)
        with pytest.raises(BackendUnavailableError):
            await queue_driver.delete(uuid.uuid4())
    finally:
        stack.start_server("customer-nats")
