"""What each customer backend holds, compared with what the event log says should exist.

The fault tests and the soak end with this check: after the reaper's passes, every tenant object
in a backend belongs to a resource the log calls active (no orphan), and every active resource
has its object (nothing missing). Backends are asked directly with their admin credentials, never
through the platform, so a lie in the log cannot hide.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import asyncpg
from miniopy_async.api import Minio
from redis.asyncio import Redis

from shared.contracts.kinds import ResourceKind, ResourceStatus

_TENANT = re.compile(r"^t[_-]([0-9a-f]{32})$")

#: Statuses in which a resource is on its way somewhere: its object may or may not exist yet.
IN_FLUX = frozenset({ResourceStatus.PROVISIONING.value, ResourceStatus.DELETING.value})


def _ids(names: list[str]) -> set[uuid.UUID]:
    """Resource ids of the tenant names (``t_<hex>``, buckets ``t-<hex>``) among ``names``."""
    found = set()
    for name in names:
        match = _TENANT.fullmatch(name)
        if match:
            found.add(uuid.UUID(match.group(1)))
    return found


async def postgres_tenants(env: Mapping[str, str]) -> set[uuid.UUID]:
    """Resources with a role or a database on the customer Postgres."""
    conn = await asyncpg.connect(env["SPINUP_CUSTOMER_PG_ADMIN_DSN"])
    try:
        rows = await conn.fetch(
            "SELECT datname AS name FROM pg_database UNION SELECT rolname FROM pg_roles"
        )
    finally:
        await conn.close()
    return _ids([row["name"] for row in rows])


async def redis_tenants(env: Mapping[str, str]) -> set[uuid.UUID]:
    """Resources with an ACL user on the customer Redis."""
    client = Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"], decode_responses=True)
    try:
        users = await client.acl_users()
    finally:
        await client.aclose()
    return _ids([user if isinstance(user, str) else user.decode() for user in users])


async def s3_tenants(env: Mapping[str, str]) -> set[uuid.UUID]:
    """Resources with a bucket on the S3 server."""
    async with aiohttp.ClientSession() as session:
        client = Minio(
            env["SPINUP_S3_ENDPOINT"].removeprefix("http://"),
            access_key=env["SPINUP_S3_ADMIN_ACCESS_KEY"],
            secret_key=env["SPINUP_S3_ADMIN_SECRET_KEY"],
            secure=False,
            region=env["SPINUP_S3_REGION"],
            session=session,
        )
        buckets = await client.list_buckets()
    return _ids([bucket.name for bucket in buckets])


#: How to list each backend's tenants. Kinds without an entry are not inventoried: NATS accounts
#: are derived from keys and pushed to the server (no admin listing), webhooks live in the
#: platform Redis under HMAC'd keys, and SecantusDB lists neither every user (``usersInfo``
#: ``forAllDBs``) nor a database before its first write.
TENANT_LISTERS: dict[ResourceKind, Callable[[Mapping[str, str]], Awaitable[set[uuid.UUID]]]] = {
    ResourceKind.POSTGRES: postgres_tenants,
    ResourceKind.REDIS: redis_tenants,
    ResourceKind.S3: s3_tenants,
}


@dataclass(frozen=True, slots=True)
class Agreement:
    """One kind's backend compared with the log.

    Attributes:
        kind: the kind compared.
        orphans: objects in the backend whose resource the log calls neither active nor suspended.
        missing: resources the log calls active or suspended whose object is not in the backend.
        in_flux: resources still provisioning or deleting (no verdict on those yet).
        active: how many resources of this kind the log calls active or suspended.
    """

    kind: ResourceKind
    orphans: frozenset[uuid.UUID]
    missing: frozenset[uuid.UUID]
    in_flux: frozenset[uuid.UUID]
    active: int

    @property
    def exact(self) -> bool:
        """Nothing in flux, no orphan, nothing missing."""
        return not (self.orphans or self.missing or self.in_flux)

    def __str__(self) -> str:
        """One line for a report or a failed assertion."""
        return (
            f"{self.kind.value}: {self.active} active, {len(self.orphans)} orphan(s),"
            f" {len(self.missing)} missing, {len(self.in_flux)} in flux"
            + (f" orphans={sorted(map(str, self.orphans))[:5]}" if self.orphans else "")
            + (f" missing={sorted(map(str, self.missing))[:5]}" if self.missing else "")
        )


_HELD = frozenset({ResourceStatus.ACTIVE.value, ResourceStatus.SUSPENDED.value})


async def compare(kind: ResourceKind, env: Mapping[str, str], platform: asyncpg.Pool) -> Agreement:
    """Compare one kind's backend with the resources read model (kept in step with the log)."""
    rows = await platform.fetch(
        "SELECT id, status, needs_cleanup FROM resources WHERE kind = $1", kind.value
    )
    in_backend = await TENANT_LISTERS[kind](env)
    # A suspended resource keeps its tenant until its export grace ends (ADR 0030).
    held = {row["id"] for row in rows if row["status"] in _HELD}
    in_flux = {
        row["id"]
        for row in rows
        if row["status"] in IN_FLUX
        or (row["status"] == ResourceStatus.FAILED.value and row["needs_cleanup"])
    }
    # An object the log does not know at all is an orphan too (intent is appended before a
    # backend is touched), though one snapshot may catch a create requested after the read
    # above: ``settled_agreement`` looks again before it concludes.
    return Agreement(
        kind=kind,
        orphans=frozenset(in_backend - held - in_flux),
        missing=frozenset(held - in_backend),
        in_flux=frozenset(in_flux),
        active=len(held),
    )


async def compare_all(
    env: Mapping[str, str],
    platform: asyncpg.Pool,
    kinds: tuple[ResourceKind, ...] = tuple(TENANT_LISTERS),
) -> list[Agreement]:
    """``compare`` for each of ``kinds`` at once."""
    return list(await asyncio.gather(*(compare(kind, env, platform) for kind in kinds)))


async def settled_agreement(
    env: Mapping[str, str],
    platform: asyncpg.Pool,
    kinds: tuple[ResourceKind, ...] = tuple(TENANT_LISTERS),
    *,
    within: float = 60.0,
    interval: float = 0.5,
) -> list[Agreement]:
    """Compare until every kind is exact or ``within`` seconds pass; the last comparison."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await compare_all(env, platform, kinds)
        if all(item.exact for item in found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(interval)
