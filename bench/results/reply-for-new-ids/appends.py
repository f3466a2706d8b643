"""The one append of a create with new ids, with its reply stored (as before ADR 0046) and without.

    .venv/bin/python bench/results/reply-for-new-ids/appends.py   (from the repository's root)

A record of how README.md's figures were taken, not a tool. On a throwaway stack, this process
appends what ``ResourceLifecycle._provision_in_one_append`` appends for a Redis create (the
intent and the outcome with sealed credentials, the row folded in the same statement) through
the workers' ``EventStore``, 16 at once, alternating the two variants for five rounds, and reads
the CPU the platform Postgres and this process spent per append; then the bytes a stored reply
takes in ``command_replies``, its index included.
"""

import statistics
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import uvloop

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from bench.__main__ import bench_stack  # noqa: E402
from bench.cpu import LOAD_GENERATOR  # noqa: E402
from bench.measure import measure  # noqa: E402
from shared.contracts.events import ResourceProvisioned as ProvisionedEvent  # noqa: E402
from shared.contracts.kinds import RedisCredentials, ResourceKind  # noqa: E402
from shared.contracts.replies import ResourceProvisioned  # noqa: E402
from shared.crypto.sealing import Keyring  # noqa: E402
from shared.eventlog.projections import ResourceProjection  # noqa: E402
from shared.eventlog.store import EventStore  # noqa: E402
from shared.naming import resource_stream  # noqa: E402
from shared.pgpool import open_pool  # noqa: E402
from shared.plans import load_plans  # noqa: E402
from shared.testing.factories import provision_requested  # noqa: E402

CALLS = 2000
ROUNDS = 5


async def run(env: dict[str, str], platform_pid: int) -> None:
    plans = load_plans(Path(env["SPINUP_PLANS_FILE"]))
    limits = plans.tiers[plans.anonymous_tier].limits(ResourceKind.REDIS)
    keyring = Keyring.from_setting(env["SPINUP_SEAL_KEYS"])
    pool = await open_pool(env["SPINUP_PLATFORM_DSN"], size=16)
    store = EventStore(pool, keyring, [ResourceProjection()])
    encoder = msgspec.json.Encoder()

    def create_append(with_reply: bool):
        async def append(_: int) -> None:
            rid = uuid.uuid4()
            credentials = RedisCredentials(
                connection_url=f"redis://r_{rid.hex}:{'p' * 43}@127.0.0.1:6379/0",
                host="127.0.0.1", port=6379, username=f"r_{rid.hex}", password="p" * 43,
                key_prefix=f"{rid.hex}:",
            )
            now = datetime.now(UTC)
            sealed = keyring.seal(encoder.encode(credentials), aad=rid.bytes)
            reply = ResourceProvisioned(
                resource_id=rid, kind=ResourceKind.REDIS, tier="anonymous", limits=limits,
                credentials=credentials, created_at=now, expires_at=None,
            )
            await store.append(
                resource_stream(rid), 0,
                [provision_requested(rid, kind=ResourceKind.REDIS, limits=limits),
                 ProvisionedEvent(resource_id=rid, credentials_sealed=sealed)],
                command_id=uuid.uuid4(), correlation_id="bench-reply",
                reply=reply if with_reply else None, recorded_at=now,
            )
        return append

    figures: dict[str, list[tuple[float, float]]] = {"with reply": [], "without": []}
    try:
        for number in range(ROUNDS):
            order = ["with reply", "without"] if number % 2 == 0 else ["without", "with reply"]
            for variant in order:
                measured = await measure(
                    variant, create_append(variant == "with reply"), calls=CALLS,
                    concurrency=16, processes={"platform-pg": platform_pid},
                )
                cpu = measured.cpu_ms_by_process
                figures[variant].append((cpu.get("platform-pg", 0.0), cpu.get(LOAD_GENERATOR, 0.0)))
                print(variant, number, f"{measured.per_second:.0f}/s", cpu, flush=True)
        for variant, rows in figures.items():
            pg = statistics.median(r[0] for r in rows)
            me = statistics.median(r[1] for r in rows)
            print(f"{variant}: platform Postgres {pg:.3f} ms, appender {me:.3f} ms per append"
                  f" (medians of {ROUNDS}: {[r[0] for r in rows]}, {[r[1] for r in rows]})")
        async with pool.acquire() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM command_replies")
            size = await conn.fetchval("SELECT pg_total_relation_size('command_replies')")
            print(f"command_replies: {rows} rows, {size} bytes with its index and TOAST,"
                  f" {size / max(rows, 1):.0f} bytes a row")
    finally:
        await pool.close()


def main() -> None:
    with bench_stack(durable=False, name="scr") as stack:
        uvloop.run(run(stack.env(), stack.servers["platform-pg"].pid))


main()
