"""Issue 8's faults: real processes killed and real servers stopped while requests flow.

Each test ends with the backends compared with the event log (``bench.inventory``): after the
reaper's passes, no tenant object the log does not call active, no active resource without its
object. Simpler failure modes (one worker down, one customer Postgres down, expiry, relay
hand-over) are in ``test_faults.py``; platform Redis down is in ``test_abuse.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.inventory import TENANT_LISTERS, settled_agreement
from devstack.procs import free_ports
from devstack.services import ServiceProcess
from devstack.stack import Stack
from shared.bus import Bus
from shared.contracts.kinds import ResourceKind
from shared.contracts.replies import ResourceProvisioned
from shared.contracts.subjects import PROVISION_ENDPOINTS, PROVISION_POSTGRES
from shared.naming import resource_stream, tenant_name
from shared.testing.factories import provision_command
from shared.testing.polling import eventually
from tests.e2e.conftest import new_resource
from tests.e2e.test_faults import assert_relayed_exactly_once_in_order, compare_rebuild_with_live
from tests.integration.conftest import connect_nats_driver
from tests.integration.test_queue_driver import LIMITS as QUEUE_LIMITS

pytestmark = pytest.mark.e2e

#: The create path of each kind whose worker is a provisioner of its own.
PATHS = {
    ResourceKind.POSTGRES: "db",
    ResourceKind.REDIS: "cache",
    ResourceKind.MONGO: "nosql",
    ResourceKind.NATS: "queue",
    ResourceKind.S3: "storage",
}
KIND_OF_PATH = {path: kind for kind, path in PATHS.items()}
#: How long the customer Redis holds every client's commands (``CLIENT PAUSE``, in ms) while
#: its worker is killed: long enough for a create to be caught in it, short enough to wait out.
REDIS_HELD_MS = 4000
#: What a request may answer while a process it needs is killed or a server is stopped.
OUTAGE_CODES = {
    "worker_unavailable",
    "worker_timeout",
    "backend_unavailable",
    "platform_unavailable",
    "deadline_exceeded",
    "command_in_progress",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of a load loop: when it began (monotonic), what it asked, what it got."""

    began: float
    path: str
    status: int
    body: dict[str, object]


async def create_in_a_loop(
    http: httpx.AsyncClient,
    path: str,
    stop: asyncio.Event,
    outcomes: list[Outcome],
    *,
    keyed: bool = False,
) -> None:
    """``POST /<path>/new`` again and again until ``stop`` (one more after it).

    ``keyed``: each with an ``Idempotency-Key`` of its own, so its intent is recorded before the
    backend is called (without one, a create of a reconciled kind is one append: ADR 0032).
    """
    while True:
        stopping = stop.is_set()
        began = time.monotonic()
        headers = {"Idempotency-Key": f"loop-{uuid.uuid4()}"} if keyed else {}
        response = await http.post(f"/{path}/new", headers=headers)
        outcomes.append(Outcome(began, path, response.status_code, response.json()))
        if stopping:
            return


@contextlib.asynccontextmanager
async def load(
    http: httpx.AsyncClient, paths: list[str], loops_per_path: int = 2, *, keyed_loops: int = 0
) -> AsyncIterator[list[Outcome]]:
    """Creates of ``paths`` in flight for as long as the block runs; every outcome after it.

    ``keyed_loops`` of each path's loops send an ``Idempotency-Key`` (``create_in_a_loop``).
    """
    stop = asyncio.Event()
    outcomes: list[Outcome] = []
    tasks = [
        asyncio.create_task(create_in_a_loop(http, path, stop, outcomes, keyed=loop < keyed_loops))
        for path in paths
        for loop in range(loops_per_path)
    ]
    try:
        yield outcomes
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def assert_created_or_503(outcomes: list[Outcome]) -> None:
    """Every answer is a 201 or a 503 with one of the documented outage codes."""
    for outcome in outcomes:
        if outcome.status != 201:
            assert outcome.status == 503, outcome
            assert outcome.body["error"] in OUTAGE_CODES, outcome


async def assert_works(resource: dict[str, object]) -> None:
    """Log in with a created resource's credentials (Postgres and Redis) and run one command."""
    url = str(resource["connection_url"])
    if resource["kind"] == ResourceKind.POSTGRES.value:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    elif resource["kind"] == ResourceKind.REDIS.value:
        client = Redis.from_url(url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


async def assert_backends_agree_with_the_log(
    env: dict[str, str], platform_db: asyncpg.Pool, kinds: tuple[ResourceKind, ...]
) -> None:
    """After the reaper's and the workers' clean-ups: no orphan, nothing missing or in flux.

    A create in one append cut off before its append leaves an object with no row, which its
    worker deletes after the reconcile's grace (twice the create timeout in the test profile).
    """
    grace = 2 * max(PROVISION_ENDPOINTS[kind].timeout for kind in kinds)
    agreements = await settled_agreement(env, platform_db, kinds, within=grace + 60)
    assert all(item.exact for item in agreements), "; ".join(map(str, agreements))


@contextlib.asynccontextmanager
async def extra_workers(stack: Stack, names: list[str]) -> AsyncIterator[list[ServiceProcess]]:
    """A second replica of each worker in ``names`` for the block (started side by side)."""
    started: list[ServiceProcess] = []
    try:
        started += await asyncio.gather(
            *(asyncio.to_thread(stack.start_extra_worker, name) for name in names)
        )
        yield started
    finally:
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in started))


async def restart(stack: Stack, services: list[str]) -> None:
    """Start these (killed) services again, side by side, as a supervisor would."""
    await asyncio.gather(*(asyncio.to_thread(stack.start_service, name) for name in services))


async def test_provisioners_killed_mid_provision_under_load_leave_no_orphan(
    stack: Stack, http: httpx.AsyncClient, env: dict[str, str], platform_db: asyncpg.Pool
) -> None:
    killed = {ResourceKind.POSTGRES: "pg-provisioner", ResourceKind.REDIS: "redis-provisioner"}

    async def provisioning(kinds: list[ResourceKind]) -> set[uuid.UUID]:
        rows = await platform_db.fetch(
            "SELECT id FROM resources WHERE status = 'provisioning' AND kind = ANY($1)",
            [kind.value for kind in kinds],
        )
        return {row["id"] for row in rows}

    paths = [PATHS[kind] for kind in killed]
    # Half the loops keyed: their creates record the intent first, so one cut off midway is a
    # row in provisioning, which the reaper removes. The others are one append each (ADR 0032):
    # cut off midway, one leaves an object no row owns, which its worker's reconcile removes.
    async with load(http, paths, loops_per_path=4, keyed_loops=2) as outcomes:
        # A Redis or pooled Postgres create takes a millisecond or two, so a kill at a random
        # moment often lands between creates (20 in a row did on a loaded machine). The customer
        # Redis holds every command for a while instead, as a slow backend would: the Redis
        # creates that arrive meanwhile are certainly midway when the kill lands. The pooled
        # Postgres creates are killed wherever they are.
        async with Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"]) as customer:
            await customer.execute_command("CLIENT", "PAUSE", REDIS_HELD_MS, "ALL")
        held_until = time.monotonic() + REDIS_HELD_MS / 1000
        assert await eventually(
            lambda: provisioning([ResourceKind.REDIS]), within=REDIS_HELD_MS / 2000, interval=0.01
        )
        for worker in killed.values():
            stack.kill_service(worker)
        caught_redis = await provisioning([ResourceKind.REDIS])
        caught = caught_redis | await provisioning([ResourceKind.POSTGRES])
        # The pause is waited out (CLIENT UNPAUSE would be held too), then the workers are back
        # at once, as a supervisor would restart them: the reaper then finds a worker for the
        # orphans' cleanup as soon as their deadline has passed.
        await asyncio.sleep(max(0.0, held_until - time.monotonic()) + 0.2)
        await restart(stack, list(killed.values()))
    assert caught_redis, "no Redis create was midway when its worker was killed"
    assert_created_or_503(outcomes)
    assert any(outcome.status == 503 for outcome in outcomes)
    created = [outcome.body for outcome in outcomes if outcome.status == 201]
    await asyncio.gather(*(assert_works(body) for body in created))

    await assert_backends_agree_with_the_log(env, platform_db, tuple(killed))
    rows = await platform_db.fetch(
        "SELECT id, status FROM resources WHERE id = ANY($1)", list(caught)
    )
    # Cut off midway: no worker could record an outcome, so the reaper removed them.
    assert {row["status"] for row in rows} <= {"deleted", "failed"}, rows


async def test_what_a_create_killed_before_its_append_leaves_is_removed_by_the_worker(
    http: httpx.AsyncClient, env: dict[str, str], customer_admin: asyncpg.Connection
) -> None:
    # Postgres, Redis, MongoDB, NATS and webhook creates are recorded with their intent after
    # the object is made (ADR 0032): killed in between, one leaves a role and database, an ACL
    # user, a MongoDB user, an account or a receiver no resource owns, as these made by hand.
    # The running workers' reconcile (the four provisioners', the gateway's) deletes them once
    # their grace (twice the create timeout in the test profile) has passed, and leaves every
    # resource the log knows alone.
    database = await new_resource(http, "db")
    cache, queue = await new_resource(http, "cache"), await new_resource(http, "queue")
    document_db = await new_resource(http, "nosql")
    receiver = await new_resource(http, "webhook")
    tenant, user, account, hook = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    mongo_user = uuid.uuid4()
    customer = Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], decode_responses=True)
    platform = Redis.from_url(env["SPINUP_REDIS_URL"], decode_responses=True)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["SPINUP_MONGO_ADMIN_URL"])
    accounts = await connect_nats_driver(env)
    try:
        await mongo[tenant_name(mongo_user)].command(
            {"createUser": tenant_name(mongo_user), "pwd": "left-behind", "roles": []}
        )
        await customer_admin.execute(f'CREATE ROLE "{tenant_name(tenant)}" LOGIN')
        await customer_admin.execute(
            f'CREATE DATABASE "{tenant_name(tenant)}" OWNER "{tenant_name(tenant)}"'
        )
        await customer.execute_command(
            "ACL", "SETUSER", tenant_name(user), "on", ">left-behind", "~x"
        )
        await accounts.create(account, QUEUE_LIMITS)
        await platform.hset(f"webhook:{tenant_name(hook)}:limits", mapping={"requests_kept": 1})

        async def left() -> set[uuid.UUID]:
            users: list[str] = await customer.execute_command("ACL", "USERS")
            hooks = await platform.keys("webhook:t_*:limits")
            databases = await customer_admin.fetchval(
                "SELECT count(*) FROM pg_roles WHERE rolname = $1", tenant_name(tenant)
            ) + await customer_admin.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = $1", tenant_name(tenant)
            )
            mongo_users = await mongo[tenant_name(mongo_user)].command(
                "usersInfo", tenant_name(mongo_user)
            )
            return {
                *({tenant} if databases else set()),
                *({user} if tenant_name(user) in users else set()),
                *({mongo_user} if mongo_users["users"] else set()),
                *({account} if await accounts.exists(account) else set()),
                *({hook} if f"webhook:{tenant_name(hook)}:limits" in hooks else set()),
            }

        assert await left() == {tenant, user, mongo_user, account, hook}
        kinds = (
            ResourceKind.POSTGRES,
            ResourceKind.REDIS,
            ResourceKind.MONGO,
            ResourceKind.NATS,
            ResourceKind.WEBHOOK,
        )
        grace = 2 * max(PROVISION_ENDPOINTS[kind].timeout for kind in kinds)
        gone = await eventually(lambda: _none_left(left), within=grace + 30, interval=1)
        assert gone, await left()
        assert cache["credentials"]["username"] in await customer.execute_command("ACL", "USERS")
        assert await accounts.exists(uuid.UUID(queue["id"]))
        kept = document_db["credentials"]["username"]
        assert (await mongo[kept].command("usersInfo", kept))["users"]
    finally:
        await mongo.close()
        await customer.aclose()
        await platform.aclose()
        await accounts.close()
    await asyncio.gather(assert_works(database), assert_works(cache))
    posted = await http.post(receiver["credentials"]["receive_url"], content=b"still open")
    assert posted.status_code < 300, posted.text


async def _none_left(left: Callable[[], Awaitable[set[uuid.UUID]]]) -> bool:
    return not await left()


async def test_a_second_replica_of_every_worker_carries_on_when_the_first_is_killed(
    stack: Stack, http: httpx.AsyncClient, env: dict[str, str], platform_db: asyncpg.Pool
) -> None:
    # The provisioner of every kind the stream creates (stack-deployer has tests of its own).
    workers = [PROVISION_ENDPOINTS[kind].queue for kind in PATHS]
    paths = [*PATHS.values(), "webhook"]
    async with extra_workers(stack, workers):
        # The gateway is the webhook kind's worker: its second replica is another gateway,
        # which also serves the webhook creates of this stream.
        standby = stack.start_extra_gateway(free_ports(1)[0])
        try:
            async with (
                httpx.AsyncClient(base_url=str(standby.url), timeout=60) as via_standby,
                load(via_standby, paths, loops_per_path=1) as outcomes,
            ):
                await asyncio.sleep(2)
                for name in [*workers, "gateway"]:
                    stack.kill_service(name)
                # New requests while the killed replicas' in-flight ones wait out their timeout.
                after = await asyncio.gather(
                    *(via_standby.post(f"/{path}/new") for path in paths for _ in range(3))
                )
        finally:
            standby.stop()
            await restart(stack, [*workers, "gateway"])

    # In flight on a killed replica when it died: that request timed out (503), nothing else.
    assert_created_or_503(outcomes)
    assert [answer.status_code for answer in after] == [201] * len(after), [
        answer.text for answer in after if answer.status_code != 201
    ]
    await assert_backends_agree_with_the_log(env, platform_db, (ResourceKind.POSTGRES,))


async def test_one_command_delivered_many_times_at_once_makes_one_resource(
    stack: Stack, env: dict[str, str], platform_db: asyncpg.Pool, customer_admin: asyncpg.Connection
) -> None:
    command = provision_command()
    async with extra_workers(stack, ["pg-provisioner"]):
        nc = await nats.connect(env["SPINUP_NATS_URL"])
        try:
            bus = Bus(nc)
            replies = await asyncio.gather(
                *(bus.request(PROVISION_POSTGRES, command) for _ in range(8))
            )
        finally:
            await nc.close()
    assert all(isinstance(reply, ResourceProvisioned) for reply in replies)
    assert {reply.resource_id for reply in replies} == {command.resource_id}
    assert len({reply.credentials for reply in replies}) == 1
    assert sum(not reply.replayed for reply in replies) == 1
    types = await platform_db.fetch(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version",
        resource_stream(command.resource_id),
    )
    assert [row["event_type"] for row in types] == [
        "ResourceProvisionRequested",
        "ResourceProvisioned",
    ]
    name = tenant_name(command.resource_id)
    assert (
        await customer_admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        == 1
    )
    conn = await asyncpg.connect(replies[0].credentials.connection_url)
    await conn.close()


async def test_one_idempotency_key_sent_at_once_through_two_gateways_makes_one_resource(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    standby = stack.start_extra_gateway(free_ports(1)[0])
    try:
        async with httpx.AsyncClient(base_url=str(standby.url), timeout=60) as other:
            answers = await asyncio.gather(
                *(client.post("/cache/new", headers=key) for client in [http, other] * 4)
            )
    finally:
        standby.stop()
    assert {answer.status_code for answer in answers} == {201}
    bodies = [answer.json() for answer in answers]
    assert len({body["id"] for body in bodies}) == 1
    assert len({body["connection_url"] for body in bodies}) == 1
    assert [answer.headers.get("idempotent-replayed") for answer in answers].count("true") == 7
    await assert_works(bodies[0])


async def test_platform_nats_restart_gives_503_meanwhile_and_loses_no_event(
    stack: Stack,
    http: httpx.AsyncClient,
    short_ttl_http: httpx.AsyncClient,
    env: dict[str, str],
    platform_db: asyncpg.Pool,
) -> None:
    await asyncio.to_thread(stack.stop_server, "nats")
    try:
        during = await http.post("/db/new")
        assert during.status_code == 503, during.text
        assert during.json()["error"] == "platform_unavailable"
        assert (await http.get("/readyz")).status_code == 503
        # Appended while NATS is away (registration needs only the database): relayed later.
        email = f"nats-outage-{uuid.uuid4().hex[:8]}@example.com"
        registered = await http.post(
            "/auth/register", json={"email": email, "password": "correct horse battery"}
        )
        assert registered.status_code == 201, registered.text
    finally:
        await asyncio.to_thread(stack.start_server, "nats")

    async def every_kind_answers() -> bool:
        answers = await asyncio.gather(
            *(http.post(f"/{path}/new") for path in [*PATHS.values(), "webhook"])
        )
        return all(answer.status_code == 201 for answer in answers)

    assert await eventually(every_kind_answers, within=30), "a worker did not reconnect"
    # The reaper reconnected too: it still expires what is due.
    short = await new_resource(short_ttl_http, "db")

    async def expired() -> bool:
        return (await http.get(f"/resources/{short['token']}")).status_code == 410

    assert await eventually(expired, within=30), "the reaper did not come back"
    nc = await nats.connect(env["SPINUP_NATS_URL"])
    try:
        await assert_relayed_exactly_once_in_order(nc, platform_db)
    finally:
        await nc.close()


async def test_platform_postgres_stopped_under_load_503_meanwhile_nothing_half_written(
    stack: Stack, http: httpx.AsyncClient, env: dict[str, str], platform_db: asyncpg.Pool
) -> None:
    existing = await new_resource(http, "db")
    async with load(http, ["db", "cache"], loops_per_path=2) as outcomes:
        await asyncio.sleep(1)
        await asyncio.to_thread(stack.stop_server, "platform-pg")
        try:
            shown = await http.get(f"/resources/{existing['token']}")
            assert shown.status_code == 503, shown.text
            assert shown.json()["error"] == "platform_unavailable"
            assert (await http.get("/readyz")).status_code == 503
            during = await http.post("/db/new")
            assert during.status_code == 503, during.text
            await asyncio.sleep(1)
        finally:
            await asyncio.to_thread(stack.start_server, "platform-pg")

        async def recovered() -> bool:
            return (await http.post("/db/new")).status_code == 201

        assert await eventually(recovered, within=30), "no recovery after Postgres came back"
    assert_created_or_503(outcomes)
    assert any(outcome.status == 503 for outcome in outcomes)
    created = [outcome.body for outcome in outcomes if outcome.status == 201]
    await asyncio.gather(*(assert_works(body) for body in [existing, *created]))
    assert (await http.get(f"/resources/{existing['token']}")).status_code == 200
    await assert_backends_agree_with_the_log(
        env, platform_db, (ResourceKind.POSTGRES, ResourceKind.REDIS)
    )
    # Nothing half-written: the read model equals a rebuild from the log.
    await asyncio.to_thread(stack.stop_service, "reaper")
    try:
        await compare_rebuild_with_live(env, platform_db)
    finally:
        await asyncio.to_thread(stack.start_service, "reaper")


async def test_a_restarted_customer_redis_gets_its_tenants_back_from_the_log(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    """The server keeps no users across a restart; redis-provisioner puts them back (ADR 0045)."""
    kept = await new_resource(http, "cache")
    rotated_before = await new_resource(http, "cache")
    rotation = await http.post(f"/resources/{rotated_before['token']}/rotate")
    assert rotation.status_code == 200, rotation.text
    rotated = rotation.json()["connection_url"]
    deleted = await new_resource(http, "cache")
    assert (await http.delete(f"/resources/{deleted['token']}")).status_code == 200

    async def logs_in(url: str) -> bool:
        client = Redis.from_url(url, single_connection_client=True)
        try:
            return bool(await client.ping())
        except RedisConnectionError:  # AuthenticationError among them
            return False
        finally:
            await client.aclose()

    await asyncio.to_thread(stack.stop_server, "customer-redis")
    await asyncio.to_thread(stack.start_server, "customer-redis")
    assert await eventually(lambda: logs_in(kept["connection_url"]), within=30)
    assert await eventually(lambda: logs_in(rotated), within=30)
    assert not await logs_in(rotated_before["connection_url"])
    assert not await logs_in(deleted["connection_url"])
    # And the API still makes caches.
    assert await logs_in((await new_resource(http, "cache"))["connection_url"])


@pytest.mark.parametrize(
    "outage", [("customer-redis", "cache"), ("mongo", "nosql")], ids=["redis", "mongo"]
)
async def test_a_customer_backend_down_fails_its_kind_only(
    stack: Stack,
    http: httpx.AsyncClient,
    env: dict[str, str],
    platform_db: asyncpg.Pool,
    outage: tuple[str, str],
) -> None:
    server, path = outage
    await asyncio.to_thread(stack.stop_server, server)
    try:
        refused = await http.post(f"/{path}/new")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "backend_unavailable"
        others = await asyncio.gather(
            *(http.post(f"/{other}/new") for other in ["db", "webhook", "queue"])
        )
        assert [other.status_code for other in others] == [201, 201, 201]
    finally:
        await asyncio.to_thread(stack.start_server, server)

    async def back() -> bool:
        return (await http.post(f"/{path}/new")).status_code == 201

    assert await eventually(back, within=30)
    if KIND_OF_PATH[path] in TENANT_LISTERS:
        await assert_backends_agree_with_the_log(env, platform_db, (KIND_OF_PATH[path],))
