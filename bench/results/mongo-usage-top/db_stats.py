"""What one dbStats costs SecantusDB for a tenant holding N documents, and whether others wait."""
import asyncio, shutil, time, uuid, statistics, os
from pathlib import Path
from pymongo import AsyncMongoClient
from devstack import mongo
from devstack.profile import Profile, Secrets
from mongo_provisioner.driver import MongoDriver
from shared.contracts.kinds import MongoLimits

def server_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

async def run(url, port, pid, host):
    driver = await MongoDriver.connect(url, public_host=host, public_port=port)
    rid = uuid.uuid4()
    creds = await driver.create(rid, MongoLimits(storage_mb=1000))
    tenant = AsyncMongoClient(creds.connection_url)
    db = tenant[creds.database]
    other_id = uuid.uuid4()
    other = await driver.create(other_id, MongoLimits(storage_mb=10))
    oc = AsyncMongoClient(other.connection_url)
    held = 0
    for docs in (10_000, 100_000):
        while held < docs:
            await db.items.insert_many([{"n": held + i, "body": "x" * 400} for i in range(1000)])
            held += 1000
        times, cpus = [], []
        for _ in range(5):
            c0, w0 = server_cpu(pid), time.perf_counter()
            await driver.usage([rid])
            times.append((time.perf_counter() - w0) * 1000); cpus.append((server_cpu(pid) - c0) * 1000)
        # another tenant's read while a dbStats runs
        async def probe():
            t = time.perf_counter(); await oc[other.database].x.find_one({}); return (time.perf_counter() - t) * 1000
        lone = statistics.median([await probe() for _ in range(20)])
        task = asyncio.create_task(driver.usage([rid]))
        await asyncio.sleep(0.005)
        during = await probe()
        await task
        print(f"{docs:>7,} docs (~{docs*0.45/1000:.0f} MB): a usage measure p50 {statistics.median(times):.0f} ms wall, {statistics.median(cpus):.0f} ms of the server's CPU; another tenant's find_one alone {lone:.1f} ms, during it {during:.1f} ms", flush=True)
    await tenant.close(); await oc.close(); await driver.close()

profile = Profile.test(Path("/work/main"), name="mongo-stats")
shutil.rmtree(profile.directory, ignore_errors=True)
for path in (profile.logs_dir, profile.run_dir, profile.data_dir):
    path.mkdir(parents=True, exist_ok=True)
secrets = Secrets()
server = mongo.make_server(profile, secrets)
server.init(); server.start()
try:
    server.wait_ready()
    env = mongo.worker_env(profile, secrets)
    pid = server.pid
    asyncio.run(run(env["SPINUP_MONGO_ADMIN_URL"], profile.ports.mongo, pid, env.get("SPINUP_MONGO_HOST", "127.0.0.1")))
finally:
    server.stop()
