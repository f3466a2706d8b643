"""Tables of the platform database, created idempotently at service start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts.kinds import ResourceKind, ResourceStatus
from shared.eventlog.errors import REFUSED_SQLSTATE
from shared.stacks.state import UNDER_WAY

if TYPE_CHECKING:
    import asyncpg

#: Run in a transaction, holds every append until it ends (a rebuild reads a log that stands
#: still): SHARE mode conflicts with the ROW EXCLUSIVE lock each INSERT takes.
HOLD_APPENDS = "LOCK TABLE events IN SHARE MODE"
RELAY_LOCK = 0x5350_4E55_0002
MIGRATE_LOCK = 0x5350_4E55_0003
#: Held by the one gateway process that delivers notifications (docs/adr/0027).
NOTIFIER_LOCK = 0x5350_4E55_0004
#: The statuses a plan's active cap counts, as SQL literals: the partial indexes of the caps and
#: the query that counts them (``ResourceReadModel.count_held``) name the same set, and a generic
#: plan matches a partial index against constants only, never against a parameter.
#: A stack deploy still under way, as SQL literals: the partial index and the stuck-deploy query
#: (``ResourceReadModel.stuck_stacks``) name the same set, for the reason above.
DEPLOYS_UNDER_WAY = ", ".join(f"'{status.value}'" for status in sorted(UNDER_WAY))
LIVE_STATUSES = ", ".join(
    f"'{status.value}'" for status in (ResourceStatus.PROVISIONING, ResourceStatus.ACTIVE)
)
#: The statuses whose end a notifier reports (``resource.expired``, ``resource.deleted``): the
#: partial index and the notifier's query name the same set.
ENDED_STATUSES = ", ".join(
    f"'{status.value}'"
    for status in (ResourceStatus.SUSPENDED, ResourceStatus.EXPIRED, ResourceStatus.DELETED)
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    position        bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    command_id      uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The appending transaction: the relay's order and watermark (docs/adr/0012).
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (stream_id, version)
);
-- A log made before the watermark: its events get the migrating transaction's id, newer than
-- every id they were appended with and older than every later append, in position order.
ALTER TABLE events ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS events_relay_order ON events (txid, position);

-- No longer written or read (docs/adr/0048): a repeated create answers from the resource as it
-- is now. Kept for a rolling update, whose workers of the release before still append through a
-- statement that names it; to be dropped once none of them can run.
CREATE TABLE IF NOT EXISTS command_replies (
    command_id  uuid PRIMARY KEY,
    reply       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS relay_positions (
    relay    text PRIMARY KEY,
    position bigint NOT NULL
);
ALTER TABLE relay_positions ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT '0';

CREATE TABLE IF NOT EXISTS resources (
    id                   uuid PRIMARY KEY,
    version              integer     NOT NULL,
    status               text        NOT NULL,
    kind                 text,
    tier                 text,
    limits               jsonb,
    token_hash           text UNIQUE,
    fingerprint          text,
    name                 text,
    created_at           timestamptz,
    expires_at           timestamptz,
    deadline             timestamptz,
    updated_at           timestamptz,
    provision_command_id uuid,
    credentials_sealed   text,
    failure_code         text,
    needs_cleanup        boolean     NOT NULL,
    deprovision_reason   text
);
ALTER TABLE resources ADD COLUMN IF NOT EXISTS account_id uuid;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS quota_exceeded boolean NOT NULL DEFAULT false;
-- The stack a backing resource belongs to (deleted with it, shown under it).
ALTER TABLE resources ADD COLUMN IF NOT EXISTS parent_id uuid;
-- The lifetime's state (docs/adr/0027, 0030): what GET shows of a suspended resource (until when
-- its export works) comes from here. Rows written before these columns show 0 and NULL until
-- their stream's next append or `python -m shared.eventlog rebuild`.
ALTER TABLE resources ADD COLUMN IF NOT EXISTS extensions integer NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS export_grace_seconds integer NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS delete_at timestamptz;
-- A stack's deploy (shared.stacks.state.DeployProgress): where the reaper finds a deploy whose
-- worker died (docs/adr/0035). NULL for every other kind.
ALTER TABLE resources ADD COLUMN IF NOT EXISTS deploy_status text;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS deploy_revision integer;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS deploy_moved_at timestamptz;
-- The stacks the reaper's stuck-deploy query can name: few, whatever the number of stacks.
CREATE INDEX IF NOT EXISTS resources_deploy_under_way ON resources (deploy_moved_at)
    WHERE kind = '{ResourceKind.STACK.value}' AND status = '{ResourceStatus.ACTIVE.value}'
      AND deploy_status IN ({DEPLOYS_UNDER_WAY});
-- Where its notifications go (``NotifyTargetSet``), when its first ``resource.expiring`` can be
-- due, and the last over-quota event while targeted: the notifier's work comes from these rows
-- (docs/adr/0037). ``migrate`` rebuilds the projection once when it adds them to older rows.
ALTER TABLE resources ADD COLUMN IF NOT EXISTS notify_url text;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS notify_generation integer;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS notify_leads integer[];
ALTER TABLE resources ADD COLUMN IF NOT EXISTS notify_from timestamptz;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS over_quota_event uuid;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS over_quota_usage bigint;
ALTER TABLE resources ADD COLUMN IF NOT EXISTS over_quota_quota bigint;
-- The notifier's three questions, each over the targeted rows it concerns only: live ones in
-- their warning window, live ones once over quota, and ones that ended (by when they changed).
CREATE INDEX IF NOT EXISTS resources_notify_warn ON resources (notify_from)
    WHERE notify_from IS NOT NULL AND status = '{ResourceStatus.ACTIVE.value}';
CREATE INDEX IF NOT EXISTS resources_notify_over_quota ON resources (id)
    WHERE notify_url IS NOT NULL AND over_quota_event IS NOT NULL
      AND status = '{ResourceStatus.ACTIVE.value}';
CREATE INDEX IF NOT EXISTS resources_notify_ended ON resources (updated_at)
    WHERE notify_url IS NOT NULL AND status IN ({ENDED_STATUSES});
CREATE INDEX IF NOT EXISTS resources_parent ON resources (parent_id) WHERE parent_id IS NOT NULL;
-- An account's resources. Only rows with an account: anonymous ones (nearly all) would make it
-- large, and a query for anonymous rows (``account_id IS NULL``) could pick it (below).
CREATE INDEX IF NOT EXISTS resources_owned ON resources (account_id) WHERE account_id IS NOT NULL;
DROP INDEX IF EXISTS resources_account;
-- What a worker answers the reaper's sweep with (``ResourceReadModel.due``): per kind and status,
-- the range past its time; a restore's live resources of a kind. It replaces two indexes that
-- held its parts: (status, expires_at) and (kind, status).
CREATE INDEX IF NOT EXISTS resources_kind_status_expires ON resources (kind, status, expires_at);
DROP INDEX IF EXISTS resources_status_expires;
DROP INDEX IF EXISTS resources_kind_status;
-- A usage sweep's pages (``ResourceReadModel.active_page``): a kind's active resources in id
-- order from where the last page ended. Walking the primary key instead read every row of every
-- kind and status on the way, gone ones included (docs/adr/0058).
CREATE INDEX IF NOT EXISTS resources_active_by_kind ON resources (kind, id)
    WHERE status = '{ResourceStatus.ACTIVE.value}';
-- What a plan's caps count (gateway admission, ResourceReadModel.count_held): live resources of
-- a kind, and resources made in the last day, per client network or per account. The account
-- indexes hold no anonymous row. When they did, the anonymous count's cached generic plan could
-- take (account_id IS NULL, kind) as its index condition and filter every anonymous live
-- resource of the kind by network: a scan that grew with the platform, on every create.
CREATE INDEX IF NOT EXISTS resources_anonymous_live ON resources (fingerprint, kind)
    WHERE account_id IS NULL AND status IN ({LIVE_STATUSES});
CREATE INDEX IF NOT EXISTS resources_owned_live ON resources (account_id, kind)
    WHERE account_id IS NOT NULL AND status IN ({LIVE_STATUSES});
CREATE INDEX IF NOT EXISTS resources_anonymous_made ON resources (fingerprint, created_at)
    WHERE account_id IS NULL;
CREATE INDEX IF NOT EXISTS resources_owned_made ON resources (account_id, created_at)
    WHERE account_id IS NOT NULL;
DROP INDEX IF EXISTS resources_account_live;
DROP INDEX IF EXISTS resources_account_made;
-- Every query by client network asks for anonymous rows, which resources_anonymous_made holds in
-- creation order: an index on the network alone was one more write on every create.
DROP INDEX IF EXISTS resources_fingerprint;

-- Which claims name a resource (the Neon-compatible API's CLAIMING status).
CREATE INDEX IF NOT EXISTS events_claim_started ON events USING gin ((data -> 'resource_ids'))
    WHERE event_type = 'ClaimStarted';

-- What the last usage sweep measured: an observation, not a fact of the log, so it is a plain
-- table overwritten by each sweep (a measurement every minute would swamp the log).
CREATE TABLE IF NOT EXISTS resource_usage (
    resource_id  uuid PRIMARY KEY,
    usage_bytes  bigint      NOT NULL,
    measured_at  timestamptz NOT NULL
);

-- What an append's precondition calls to refuse it (store.Precondition, docs/adr/0040). It
-- raises, so the one statement that appends writes nothing.
CREATE OR REPLACE FUNCTION refuse_append(detail text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'append refused by its precondition'
    USING ERRCODE = '{REFUSED_SQLSTATE}', DETAIL = detail;
END
$$;
"""


#: What a platform connection runs before it serves (``pgpool.warm_pool``, after ``migrate``):
#: every array and ``xid8`` type the platform's statements bind or read, for asyncpg to look up
#: once (a look-up took 4-10 ms on a connection's first create or read), and the tables a create
#: and a read touch, for Postgres to load their catalog entries and indexes.
WARM_CONNECTION = """
SELECT NULL::integer[], NULL::bigint[], NULL::uuid[], NULL::text[], NULL::jsonb[], NULL::xid8
FROM events, resources, resource_usage WHERE false
"""


#: True when ``resources`` holds rows written before its newest folded columns (the notify
#: target's, docs/adr/0037), which only a rebuild from the log fills in.
_ROWS_LACK_NEWEST_COLUMNS = """
SELECT to_regclass('resources') IS NOT NULL AND NOT EXISTS (
  SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('resources')
    AND attname = 'over_quota_quota' AND NOT attisdropped)
"""


async def migrate(pool: asyncpg.Pool, schema: str = SCHEMA) -> None:
    """Create missing tables; safe when several services start at once.

    ``schema`` is the event log's by default; a service with read models of its own (the
    gateway's accounts) passes their DDL, run under the same lock. When ``resources`` gains
    folded columns its existing rows lack, the projection is rebuilt from the log, once: the
    first service to migrate does it.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        stale_rows = await conn.fetchval(_ROWS_LACK_NEWEST_COLUMNS)
        await conn.execute(schema)
    if stale_rows:
        # Imported here: the projection's module imports this one.
        from shared.eventlog.projections import rebuild_resources  # noqa: PLC0415

        await rebuild_resources(pool)
