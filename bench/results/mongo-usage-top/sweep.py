"""A MongoDB usage sweep of tenants holding data, three times: the server's CPU and another tenant's wait."""
import asyncio, shutil, time, uuid, statistics, os, sys, inspect
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
    memo = {}
    if "measures" in inspect.signature(MongoDriver.__init__).parameters:
        from shared.usage_memo import UsageMemo
        memo = {"measures": UsageMemo(settle_s=0)}
    driver = MongoDriver(AsyncMongoClient(url), public_host=host, public_port=port, **memo)
    tenants = []
    for _ in range(20):
        rid = uuid.uuid4()
        creds = await driver.create(rid, MongoLimits(storage_mb=1000))
        c = AsyncMongoClient(creds.connection_url)
        for _ in range(10):
            await c[creds.database].items.insert_many([{"body": "x" * 400} for _ in range(1000)])
        await c.close()
        tenants.append(rid)
    other = await driver.create(uuid.uuid4(), MongoLimits(storage_mb=10))
    oc = AsyncMongoClient(other.connection_url)
    async def probe():
        t = time.perf_counter(); await oc[other.database].x.find_one({}); return (time.perf_counter() - t) * 1000
    for sweep in range(3):
        waits = []
        stop = False
        async def prober():
            while not stop:
                waits.append(await probe()); await asyncio.sleep(0.01)
        task = asyncio.create_task(prober())
        c0, w0 = server_cpu(pid), time.perf_counter()
        await driver.usage(tenants)
        wall, cpu = (time.perf_counter() - w0) * 1000, (server_cpu(pid) - c0) * 1000
        stop = True; await task
        print(f"sweep {sweep + 1} of 20 tenants x 10,000 documents: {wall:.0f} ms wall, {cpu:.0f} ms of the server's CPU; another tenant's find_one meanwhile: {len(waits)} calls, max {max(waits):.1f} ms", flush=True)
    await oc.close(); await driver.close()

profile = Profile.test(Path("/work/main"), name=sys.argv[1])
shutil.rmtree(profile.directory, ignore_errors=True)
for path in (profile.logs_dir, profile.run_dir, profile.data_dir):
    path.mkdir(parents=True, exist_ok=True)
secrets = Secrets()
server = mongo.make_server(profile, secrets)
server.init(); server.start()
try:
    server.wait_ready()
    env = mongo.worker_env(profile, secrets)
    asyncio.run(run(env["SPINUP_MONGO_ADMIN_URL"], profile.ports.mongo, server.pid, env["SPINUP_MONGO_HOST"]))
finally:
    server.stop()
