"""What a benchmark ran on: the machine, and the version of every server and main library."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import nats
from redis.asyncio import Redis

import storage_provisioner.settings
from bench import pingpong

# Libraries on the request path whose versions explain a number.
LIBRARIES = ("litestar", "uvicorn", "msgspec", "nats-py", "asyncpg", "redis", "aiohttp")


#: Where the stacks keep their data: the filesystem whose fullness a run's writes feel.
_DATA_DISK = Path(__file__).resolve().parents[1]


def describe_machine() -> dict[str, Any]:
    """The machine: its cores, memory, CPU, kernel, load, data disk and message cost.

    A run of 2026-12-06 stalled in a ``/nosql/new`` phase for 8 s with the cores mostly idle,
    on a disk found 96 % full afterwards. Whether the disk caused it was not shown; runs record
    it so the next one can tell. Three runs later that day were slower on every row,
    ``GET /healthz`` included: the message cost, a loopback round trip between two processes
    (``bench.pingpong``), is recorded so that a run can show whether the host itself was slower.
    """
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "cpu": model or platform.processor(),
        "kernel": platform.release(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "disk_used_percent": _used_percent(_DATA_DISK),
        "message_round_trip": pingpong.measure_in_a_process(),
    }


def _used_percent(path: Path) -> float:
    """As ``df`` counts it: of the space the user can have, the share in use."""
    usage = shutil.disk_usage(path)
    return round(100 * usage.used / (usage.used + usage.free), 1)


async def _postgres(env: Mapping[str, str]) -> str:
    conn = await asyncpg.connect(env["SPINUP_CUSTOMER_PG_ADMIN_DSN"])
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _redis(env: Mapping[str, str]) -> str:
    client = Redis.from_url(env["SPINUP_CUSTOMER_REDIS_URL"])
    try:
        info = await client.info("server")
        return str(info["redis_version"])
    finally:
        await client.aclose()


async def _nats(env: Mapping[str, str]) -> str:
    client = await nats.connect(env["SPINUP_NATS_URL"], name="bench-version")
    try:
        version = client.connected_server_version
        return f"{version.major}.{version.minor}.{version.patch}"
    finally:
        await client.close()


async def _seaweedfs(env: Mapping[str, str]) -> str:
    weed = storage_provisioner.settings.Settings.from_env(env).weed
    process = await asyncio.create_subprocess_exec(
        str(weed), "version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    # "version 30GB 4.48 <commit> linux amd64": the release is the first dotted word.
    words = out.decode().split()
    return next((word for word in words if word[:1].isdigit() and "." in word), out.decode())


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def versions(env: Mapping[str, str]) -> dict[str, str]:
    """Python, the servers (asked directly) and the main libraries; "?" when one cannot say."""
    found: dict[str, str] = {"python": platform.python_version()}
    probes = {
        "postgres": _postgres,
        "redis-server": _redis,
        "nats-server": _nats,
        "seaweedfs": _seaweedfs,
    }
    for name, probe in probes.items():
        try:
            found[name] = await probe(env)
        except Exception as exc:  # noqa: BLE001 (a version we cannot read is reported, not fatal)
            found[name] = f"? ({type(exc).__name__})"
    found["secantusdb"] = _package("secantusdb")
    found.update({f"{library} (py)": _package(library) for library in LIBRARIES})
    return found
