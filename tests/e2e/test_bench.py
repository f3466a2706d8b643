"""``make bench`` in smoke mode: the same code, a few calls of everything, so it cannot rot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
import pytest

from bench import drivers
from bench.__main__ import measure
from bench.breakdown import breakdown, cpu_per_create
from bench.cpu import stack_processes
from bench.floor import ALONE_P50, FLOORS, RATE, medians, one_round, table
from bench.harness import NEW_PATH, SMOKE, Progress, Target
from bench.pg_floors import QUICK, pg_floors
from bench.pool_trickle import trickle
from bench.report import CHART_NAME, JSON_NAME, MARKDOWN_NAME
from bench.sweep_effect import MEASURED, make_tenants, probe
from bench.tails import one_run, report
from devstack.stack import Stack

pytestmark = pytest.mark.e2e


async def test_the_smoke_run_measures_everything_without_errors(
    stack: Stack, tmp_path: Path
) -> None:
    target = Target(gateway_url=stack.gateway_url, env=stack.env(), stack=stack)
    await measure(target, smoke=True, out=tmp_path, quiet=True)

    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert (tmp_path / CHART_NAME).stat().st_size > 0
    assert "POST /db/new" in (tmp_path / MARKDOWN_NAME).read_text()
    rows = results["rows"]
    assert [row for row in rows if row["errors"]] == []
    # POST /db/new is measured from the warm pool and cold: "end to end (pool)", "... (cold)".
    measured = {(row["group"].split(" (")[0], row["kind"], row["concurrency"]) for row in rows}
    for kind in NEW_PATH:
        assert kind in drivers.KINDS, f"bench/drivers.py has no driver for {kind}"
        for level in SMOKE.levels:
            assert ("raw create", kind.value, level) in measured
            assert ("end to end", kind.value, level) in measured
        assert ("raw delete", kind.value, SMOKE.top) in measured
    for row in rows:
        assert row["calls"] > 0, row
        assert row["p50_ms"] > 0, row
        # The stack is known, so every measurement counts the CPU it cost, the bench's own too;
        # but the reaper's paced probes, whose share of the CPU would be the reaper's deletes.
        if row["name"].endswith(("(reaper idle)", "(reaper deleting)")):
            assert row["cpu_ms_per_call"] is None, row
            continue
        assert row["cpu_ms_per_call"] > 0, row
        assert "load generator" in row["cpu_ms_by_process"], row
        assert row["cpu_bound_per_s"] > 0, row
        if row["group"].startswith("end to end"):
            assert row["floor"]["calls"] > 0, row
            assert row["p50_ratio"] > 0, row
    pooled = {row["group"] for row in rows if row["kind"] == "postgres"}
    assert {"end to end (pool)", "end to end (cold)"} <= pooled
    floors = {row["name"] for row in rows if row["group"] == "floor"}
    assert floors == {"GET /healthz", "NATS request-reply echo"}

    capture = results["webhook_capture"]
    assert capture["sent"] == SMOKE.webhook_sends
    assert capture["stored"] == capture["answered"] == capture["sent"]
    reaper = results["reaper"]
    assert reaper["expired_databases"] == SMOKE.reaped
    assert reaper["deleted"] == SMOKE.reaped
    assert reaper["deleted_within_s"] > 0
    # Every probe is accounted for (tests/unit/test_bench_reaper), and the pool, full once the
    # stack is quiet, served some: a lookup that matched no pooled create would count all cold.
    assert reaper["idle_probes"] == SMOKE.reaper_probes
    probes = reaper["idle_probes"] + reaper["busy_probes"]
    assert reaper["idle_cold"] + reaper["busy_cold"] < probes, reaper
    assert results["versions"]["postgres"][0].isdigit()
    assert results["machine"]["cores"] >= 1
    # The host's message cost, measured with the run (bench.pingpong): a round trip takes time,
    # and both of its sides spend CPU on it.
    trip = results["machine"]["message_round_trip"]
    assert trip["round_trip_us"] > 0
    assert trip["cpu_us"] > 0


async def test_the_breakdown_times_every_layer_of_a_create(stack: Stack) -> None:
    lines = await breakdown(stack.gateway_url, stack.env(), calls=2)
    *layers, floor = lines
    assert len(layers) == 8
    assert all("n=2 " in line for line in layers), layers
    assert floor.startswith("the steps alone, summed"), floor
    cpu = await cpu_per_create(stack.gateway_url, stack_processes(stack), calls=5)
    assert cpu[0] == "CPU per POST /cache/new (n=5, one at a time):"
    assert "all of the stack" in cpu[-2]
    assert cpu[-1].startswith("  at this cost ")


async def test_the_floor_run_measures_every_step_and_path_it_sums(stack: Stack) -> None:
    measured = await one_round(
        stack.gateway_url, stack.env(), stack_processes(stack), calls=8, targets=4, settle_s=0
    )

    assert set(measured["paths"]) == set(FLOORS)
    steps = {step for parts in FLOORS.values() for step in parts}
    assert steps <= set(measured["steps"]), steps - set(measured["steps"])
    for path, figures in measured["paths"].items():
        assert figures[RATE] > 0, path
        assert figures[ALONE_P50] > 0, path
    # A few calls of one step may fall between two of the kernel's 10 ms CPU ticks; the creates
    # of all the kinds together cannot.
    assert sum(figures.get("gateway", 0) for figures in measured["paths"].values()) > 0
    lines = table(medians([measured, measured]))
    assert sum("CPU floor" in line and "p50 floor" in line for line in lines) == len(FLOORS), lines


async def test_the_tails_run_measures_both_ratios_and_reports_their_spread(stack: Stack) -> None:
    target = Target(gateway_url=stack.gateway_url, env=stack.env(), stack=stack)
    run = await one_run(target, SMOKE, Progress(quiet=True))

    assert set(run["cold_p50_ratio"]) == set(SMOKE.levels)
    assert all(ratio > 0 for ratio in run["cold_p50_ratio"].values()), run
    assert run["reaper_p99_ratio"] > 0
    assert run["reaper_deleted"] == SMOKE.reaped
    assert [row for row in run["rows"] if row["errors"]] == []
    *per_run, cold_1, cold_4, reaper = report([run, run], SMOKE)
    assert len(per_run) == 2
    assert cold_1.startswith("cold /db/new c=1, p50 / raw (target <= 1.15x): median ")
    assert cold_4.startswith("cold /db/new c=4")
    assert reaper.startswith("reaper, /db/new p99 busy / idle (target <= 2x): median ")


async def test_every_postgres_floor_prints_a_positive_median_p99_and_rate(stack: Stack) -> None:
    env = stack.env()
    header, floors = await pg_floors(env, QUICK)

    assert [line.split(":")[0] for line in header] == ["platform cluster", "customer cluster"]
    labels = [floor.label.strip() for floor in floors]
    assert labels == [
        "event-log INSERT ... RETURNING, one at a time",
        "the same, 32 tasks over a pool of 10",
        "CREATE ROLE + DATABASE file_copy, c=1",
        "CREATE ROLE + DATABASE file_copy, c=8",
        "CREATE ROLE + DATABASE wal_log, c=1",
        "CREATE ROLE + DATABASE wal_log, c=8",
        "file_copy again, right after the wal_log ones",
        "create + drop cycle (wal_log), c=1",
        "its first 1 cycles",
        "its last 1 cycles",
        "CREATE ROLE ... PASSWORD (server hashes it)",
        "CREATE ROLE ... PASSWORD 'SCRAM-SHA-256$...'",
        "CREATE ROLE ... (no password)",
        "first connection after CREATE DATABASE",
        "the next connection",
    ]
    for floor in floors:
        line = floor.line()
        printed = dict(re.findall(r"(median|p90|p99) +([0-9.]+) ms", line))
        assert set(printed) == ({"median", "p90", "p99"} if floor.p90 else {"median", "p99"})
        assert all(float(ms) > 0 for ms in printed.values()), line
        rate = re.search(r"([0-9.]+)/s", line)
        assert (rate is not None) == (floor.per_s is not None), line
        assert rate is None or float(rate.group(1)) > 0, line
    # The rates the doc gives: the event log's from 32 tasks, the creates', the cycles'.
    assert sum(floor.per_s is not None for floor in floors) == 7
    # Everything the run made is gone: the customer cluster's roles and databases, the
    # platform's copy of the events table.
    leftovers = {
        "SPINUP_CUSTOMER_PG_ADMIN_DSN": "SELECT datname FROM pg_database"
        " UNION ALL SELECT rolname FROM pg_roles",
        "SPINUP_PLATFORM_DSN": "SELECT tablename FROM pg_tables",
    }
    for dsn, names in leftovers.items():
        conn = await asyncpg.connect(env[dsn])
        try:
            left = await conn.fetch(
                f"SELECT * FROM ({names}) AS n(name) WHERE name LIKE 'floor\\_%'"
            )
        finally:
            await conn.close()
        assert left == [], dsn


async def test_the_trickle_counts_the_creates_the_pool_did_not_serve(stack: Stack) -> None:
    pool_size = int(stack.service_env_overrides["SPINUP_PG_POOL_SIZE"])
    platform = await asyncpg.create_pool(stack.env()["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        measured = await trickle(
            stack, platform, rate=20, calls=pool_size + 2, pool_size=pool_size, settle_s=2
        )
    finally:
        await platform.close()

    assert measured["calls"] == pool_size + 2
    assert measured["errors"] == 0
    # The pool was full when the first call came: at most the two calls past its size went cold.
    assert measured["cold"] <= 2, measured
    assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]


async def test_the_sweep_bench_makes_tenants_of_every_measured_kind_then_probes(
    stack: Stack,
) -> None:
    made = await make_tenants(stack.gateway_url, 2)
    platform = await asyncpg.create_pool(stack.env()["SPINUP_PLATFORM_DSN"], min_size=1, max_size=2)
    try:
        pool_size = int(stack.service_env_overrides["SPINUP_PG_POOL_SIZE"])
        measured = await probe(stack, platform, 1.0, pool_size=pool_size, settle_s=2)
    finally:
        await platform.close()

    assert made == dict.fromkeys(MEASURED, 2)
    assert measured["calls"] >= 4  # one every 0.2 s for 1 s
    assert measured["errors"] == 0
    assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
