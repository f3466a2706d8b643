"""Composition root of pg-provisioner."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pg_provisioner.driver import PostgresDriver
from pg_provisioner.handlers import register
from pg_provisioner.settings import Settings
from shared.contracts.kinds import PostgresLimits
from shared.eventlog.projections import ResourceReadModel
from shared.eventlog.schema import WARM_CONNECTION, migrate
from shared.eventlog.store import EventStore
from shared.postgres.pool import open_pool, warm_pool
from shared.runtime import connect_with_retry, repeating
from shared.worker import serve_kind, worker_main

if TYPE_CHECKING:
    from uuid import UUID

SERVICE = "pg-provisioner"
#: How often tenants' running statements are held to their plan's ``statement_timeout_ms``:
#: a statement whose tenant turned the timeout off runs at most this much past it.
STATEMENT_CHECK_INTERVAL_S = 5.0


async def run(settings: Settings) -> None:
    """Connect and harden the customer cluster, start the warm pool, serve until signalled."""
    concurrency = settings.worker.create_concurrency + settings.worker.delete_concurrency
    driver = await connect_with_retry(
        "customer postgres",
        lambda: PostgresDriver.connect(
            settings.admin_dsn,
            public_host=settings.public_host,
            public_port=settings.public_port,
            # Refills and the drop queue hold admin connections too.
            pool_size=concurrency + settings.pool_refill_concurrency + 1,
            ddl_concurrency=settings.ddl_concurrency,
            drop_concurrency=settings.worker.delete_concurrency,
            bin_dir=settings.pg_bin_dir,
        ),
    )
    # The pool records its members in the event log through a small platform pool of its own.
    # Its store sends the relay no nudge: a take is followed by the create's own outcome append,
    # which does, and refills are relayed by the next nudge or the relay's poll.
    platform = await connect_with_retry(
        "platform postgres",
        lambda: open_pool(settings.worker.platform_dsn, size=4),
    )
    try:
        await driver.harden()
        if settings.pool_size > 0:
            await migrate(platform)
            # Its takes append on these connections, on the request's path.
            await warm_pool(platform, WARM_CONNECTION)
            driver.start_pool(
                EventStore(platform),
                size=settings.pool_size,
                refill_concurrency=settings.pool_refill_concurrency,
                reserve=settings.pool_reserve,
                reconcile_interval_s=settings.pool_reconcile_interval_s,
            )
        resources = ResourceReadModel(platform)

        async def statement_limits(resource_ids: set[UUID]) -> dict[UUID, int]:
            return {
                state.resource_id: state.limits.statement_timeout_ms
                for state in await resources.by_ids(resource_ids)
                if isinstance(state.limits, PostgresLimits)
            }

        # ADR 0065: the plan's statement_timeout_ms, whatever the tenant's sessions set.
        async with repeating(
            functools.partial(driver.cancel_overdue, statement_limits),
            STATEMENT_CHECK_INTERVAL_S,
            "pg_provisioner.statements.check_failed",
        ):
            await serve_kind(SERVICE, settings.worker, driver, register)
    finally:
        await driver.close()
        await platform.close()


def main() -> int:
    """Entry point."""
    return worker_main(SERVICE, Settings.from_env, run)
