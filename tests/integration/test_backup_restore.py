"""docs/operations.md's platform backup, done for real: dump, restore elsewhere, rebuild, compare.

A known workload goes through the running stack's gateway (anonymous resources, one deleted, an
account with an access token and a logged-out session). The platform database is then dumped
with `pg_dump` in the very snapshot the test reads the projections from (`pg_export_snapshot`),
so the services may go on writing meanwhile. The dump is restored into a fresh Postgres cluster
started here, and the restore steps of docs/operations.md follow: the log's transaction ids are
renumbered with the SQL read from that document, then the read models are emptied and rebuilt
from the restored log alone, with the operator's command (`python -m shared.eventlog rebuild`)
and the gateway's `rebuild_accounts`. They must equal the original's, row for row; the log must
be the original's, event for event (transaction ids aside); and an event appended afterwards
must be one the relay publishes.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.procs import free_ports
from devstack.servers import AppDatabase, PostgresCluster, postgres_bindir
from devstack.stack import Stack
from gateway.accounts.store import rebuild_accounts
from gateway.resources.outbox import rebuild_outbox
from shared.eventlog.projections import ResourceProjection
from shared.eventlog.store import EventStore, read_committed_after
from shared.naming import resource_stream
from shared.testing.factories import provision_requested

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RENUMBER_MARKER = "-- spinup: renumber the restored log's transaction ids"
#: Every read model of the platform database: each is a fold of the event log.
#: An address the test profile lets the notifier reach (``SPINUP_NOTIFY_ALLOWED_NETWORKS``).
UNANSWERED = "http://127.0.0.2:9/hook"
PROJECTIONS = {
    "resources": "SELECT * FROM resources ORDER BY id",
    "accounts": "SELECT * FROM accounts ORDER BY id",
    "access_tokens": "SELECT * FROM access_tokens ORDER BY id",
    "revoked_sessions": "SELECT * FROM revoked_sessions ORDER BY jti",
    "notifications": "SELECT * FROM notifications ORDER BY id",
}
#: The log as the restore keeps it: every column but the appending transaction's id.
LOG = (
    "SELECT position, stream_id, version, event_id, event_type, data, command_id,"
    " correlation_id, recorded_at FROM events ORDER BY position"
)
PASSWORD = "correct horse battery staple"

# A cluster started, a dump and a restore: about a minute on an idle machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def _workload(http: httpx.AsyncClient, platform_db: asyncpg.Pool) -> set[str]:
    """Resources made, one deleted and notified of it, an account with a token and a revoked
    session: their ids."""
    made = []
    # Nothing listens there: the notice is queued and its attempt fails, both in the log.
    for path, body in (("webhook", {"notify_url": UNANSWERED}), ("webhook", {}), ("cache", {})):
        response = await http.post(f"/{path}/new", json=body)
        assert response.status_code == 201, response.text
        made.append(response.json())
    deleted = await http.delete(f"/resources/{made[0]['token']}")
    assert deleted.status_code in {200, 204}, deleted.text
    for _ in range(100):
        if await platform_db.fetchval(
            "SELECT attempts FROM notifications WHERE resource_id = $1", uuid.UUID(made[0]["id"])
        ):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the deletion was not notified within 10 s")
    email = f"backup-{uuid.uuid4().hex[:12]}@example.com"
    registered = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    session = {"Authorization": f"Bearer {registered.json()['token']}"}
    token = await http.post(
        "/auth/tokens", json={"name": "backup", "scopes": ["read"]}, headers=session
    )
    assert token.status_code == 201, token.text
    logout = await http.post("/auth/logout", headers=session)
    assert logout.status_code in {200, 204}, logout.text
    return {resource["id"] for resource in made} | {registered.json()["account"]["id"]}


def _renumbering_sql() -> str:
    """The SQL block of docs/operations.md that renumbers a restored log (run as documented)."""
    blocks = re.findall(r"```sql\n(.*?)```", OPERATIONS.read_text(), flags=re.DOTALL)
    (block,) = [block for block in blocks if RENUMBER_MARKER in block]
    return textwrap.dedent(block)


async def _xid(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT pg_current_xact_id()::text"))


async def _run_ahead(platform_db: asyncpg.Pool, fresh: asyncpg.Pool) -> None:
    """Move the live cluster's transaction ids well past the fresh one's.

    A cluster in service has run far more transactions than a new one, so the log it dumps
    carries ids the new cluster has not reached yet; the test stack's is young too.
    """
    behind = await _xid(fresh) - await _xid(platform_db) + 10_000
    if behind > 0:
        await platform_db.execute(
            f"DO $$ BEGIN FOR i IN 1..{behind} LOOP"
            " PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"
        )


async def _tables(conn: asyncpg.Connection, queries: dict[str, str]) -> dict[str, list[Any]]:
    return {name: [dict(row) for row in await conn.fetch(query)] for name, query in queries.items()}


async def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"{Path(argv[0]).name}: {stderr.decode()}"
    return stdout.decode()


@pytest.fixture
def fresh_server(stack: Stack) -> Iterator[tuple[PostgresCluster, str]]:
    """A new, empty Postgres cluster with the platform's role and database: (cluster, DSN)."""
    password = secrets.token_urlsafe(24)
    name = f"restore-{uuid.uuid4().hex[:8]}"
    # Under the stack's own directory: the `postgres` user (when run as root) can traverse it.
    cluster = PostgresCluster(
        name,
        label="restored platform postgres",
        data_dir=stack.profile.data_dir / name,
        run_dir=stack.profile.run_dir,
        log_path=stack.profile.logs_dir / f"{name}.log",
        port=free_ports(1)[0],
        superuser_password=secrets.token_urlsafe(24),
        hba=["local all postgres peer", "host all all 127.0.0.1/32 scram-sha-256"],
        settings={"fsync": "off", "full_page_writes": "off"},
        durable=False,
        apps=(AppDatabase(role="spinup", password=password, database="spinup"),),
    )
    cluster.init()
    cluster.start()
    try:
        cluster.wait_ready()
        cluster.after_ready()
        yield cluster, f"postgresql://spinup:{password}@127.0.0.1:{cluster.port}/spinup"
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)


@pytest.fixture
async def restored(
    fresh_server: tuple[PostgresCluster, str],
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    _, dsn = fresh_server
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    yield dsn, pool
    await pool.close()


async def test_the_platform_database_restored_from_a_dump_rebuilds_identical_read_models(
    env: dict[str, str],
    http: httpx.AsyncClient,
    platform_db: asyncpg.Pool,
    restored: tuple[str, asyncpg.Pool],
    tmp_path: Path,
) -> None:
    dsn, pool = restored
    await _run_ahead(platform_db, pool)
    made = await _workload(http, platform_db)
    dump = tmp_path / "platform.dump"
    original = await asyncpg.connect(env["SPINUP_PLATFORM_DSN"])
    try:
        # The dump and the tables compared with it come from one snapshot of the live server.
        async with original.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await original.fetchval("SELECT pg_export_snapshot()")
            before = await _tables(original, PROJECTIONS)
            log = await _tables(original, {"events": LOG})
            await _run(
                str(postgres_bindir() / "pg_dump"),
                "--format=custom",
                f"--snapshot={snapshot}",
                f"--file={dump}",
                f"--dbname={env['SPINUP_PLATFORM_DSN']}",
            )
    finally:
        await original.close()
    resource_ids = {str(row["id"]) for row in before["resources"]}
    account_ids = {str(row["id"]) for row in before["accounts"]}
    assert made <= resource_ids | account_ids
    assert all(before.values()), "the workload left every read model some rows"

    await _run(
        str(postgres_bindir() / "pg_restore"),
        "--exit-on-error",
        "--no-owner",
        f"--dbname={dsn}",
        str(dump),
    )
    # Why the renumbering: the restored log's ids are ahead of this cluster's next one.
    assert await pool.fetchval("SELECT max(txid)::text::bigint FROM events") > await _xid(pool)
    await pool.execute(_renumbering_sql())
    # Nothing of the dump's read models survives: what follows comes from the log alone.
    await pool.execute(f"TRUNCATE {', '.join(PROJECTIONS)}")
    rebuilt = await _run(
        sys.executable, "-m", "shared.eventlog", "rebuild", env={"SPINUP_PLATFORM_DSN": dsn}
    )
    assert f"rebuilt resources projection: {len(before['resources'])} rows" in rebuilt
    assert await rebuild_accounts(pool) == len(before["accounts"])
    assert await rebuild_outbox(pool) == len(before["notifications"])

    async with pool.acquire() as conn:
        assert await _tables(conn, {"events": LOG}) == log
        assert await _tables(conn, PROJECTIONS) == before
        # The next append continues the log: the position sequence came back with the table.
        next_position = await conn.fetchval(
            "SELECT last_value FROM pg_sequences WHERE sequencename ="
            " (SELECT split_part(pg_get_serial_sequence('events', 'position'), '.', 2))"
        )
    assert next_position >= max(event["position"] for event in log["events"])

    # The restored server takes new appends, and the relay, resuming from its restored position,
    # publishes them (in a new cluster, without the renumbering, it would skip them).
    store = EventStore(pool, [ResourceProjection()])
    resource_id = uuid.uuid4()
    await store.append(
        resource_stream(resource_id),
        0,
        [provision_requested(resource_id)],
        command_id=uuid.uuid4(),
        correlation_id="after-restore",
    )
    async with pool.acquire() as conn:
        cursor = await conn.fetchrow("SELECT txid, position FROM relay_positions")
        assert cursor is not None, "the test stack's relay recorded a position before the dump"
        relayed = await read_committed_after(conn, (cursor["txid"], cursor["position"]), 100_000)
    assert resource_stream(resource_id) in {event.stream_id for _, event in relayed}
