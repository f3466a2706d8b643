"""A/B: the client's CPU per command, Motor 3.7.1 (threads) vs PyMongo's AsyncMongoClient.

One secantusd (the dev stack's flags); the same createUser, and a ping, at c=16, from one
process: A is pymongo.AsyncMongoClient, B motor.AsyncIOMotorClient (installed aside with
``pip install --no-deps --target /tmp/motorlib motor==3.7.1``). CPU is this process's own
(time.process_time), which is where the two differ; the server's is reported beside it.
"""
import asyncio, os, secrets, socket, statistics, subprocess, sys, time
from pathlib import Path

sys.path.append("/tmp/motorlib")
from motor.motor_asyncio import AsyncIOMotorClient  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402


def free_port() -> int:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def server_cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def run(client, n: int, what: str) -> tuple[float, float]:
    slots = asyncio.Semaphore(16)

    async def one() -> None:
        async with slots:
            if what == "ping":
                await client.admin.command("ping")
            else:
                name = f"t_{secrets.token_hex(8)}"
                await client[name].command({"createUser": name, "pwd": secrets.token_urlsafe(24),
                                            "roles": [{"role": "readWrite", "db": name}],
                                            "mechanisms": ["SCRAM-SHA-256"]})

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - cpu) / n * 1000, n / (time.perf_counter() - wall)


async def main() -> None:
    home = Path("/tmp/pymongo-ab"); home.mkdir(exist_ok=True); (home / "c.toml").write_text("#\n")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "devstack.secantusd", "--config", str(home / "c.toml"), "--host", "127.0.0.1",
         "--port", str(port), "--storage-path", str(home / "wt"), "--cache-size", "64M", "--log-level", "WARNING",
         "--setParameter", "scramSHA256IterationCount=5000"], cwd="/work/main", stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    await asyncio.sleep(4)
    url = f"mongodb://127.0.0.1:{port}/"
    clients = {"A pymongo": AsyncMongoClient(url, directConnection=True),
               "B motor": AsyncIOMotorClient(url, directConnection=True)}
    for c in clients.values():
        await c.admin.command("ping")
    results: dict[str, dict[str, list[float]]] = {k: {} for k in clients}
    for rnd in range(3):
        order = list(clients) if rnd % 2 == 0 else list(clients)[::-1]
        for name in order:
            for what, n in (("ping", 3000), ("createUser", 400)):
                s0 = server_cpu(server.pid)
                cpu, rate = await run(clients[name], n, what)
                srv = (server_cpu(server.pid) - s0) / n * 1000
                results[name].setdefault(what, []).append(cpu)
                print(f"round {rnd} {name} {what}: client CPU {cpu:.3f} ms/command, {rate:.0f}/s, server {srv:.2f} ms", flush=True)
    for name, by in results.items():
        print(name, {w: round(statistics.median(v), 3) for w, v in by.items()})
    server.terminate()


asyncio.run(main())
