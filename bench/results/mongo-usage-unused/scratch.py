import asyncio, time, uuid, uvloop
from bench.__main__ import bench_stack
from bench.cpu import CpuMeter, stack_processes
from mongo_provisioner.driver import MongoDriver, USAGE_CONCURRENCY
from shared.contracts.kinds import MongoLimits
from shared.naming import guard_tenant_name, tenant_name

async def old_usage(d, rids):
    names = {guard_tenant_name(tenant_name(r)): r for r in rids}
    slots = asyncio.Semaphore(USAGE_CONCURRENCY)
    async def measure(name):
        async with slots:
            st = await d._client[name].command("dbStats")
        return int(st.get("dataSize", 0)) + int(st.get("indexSize", 0))
    found = await d._client.admin.command("usersInfo", [{"user": n, "db": n} for n in names])
    existing = [str(u["db"]) for u in found.get("users", []) if u.get("db") in names and u.get("user") == u.get("db")]
    sizes = await asyncio.gather(*(measure(n) for n in existing))
    return {names[n]: s for n, s in zip(existing, sizes)}

async def main(stack):
    env = stack.env()
    d = await MongoDriver.connect(env["SPINUP_MONGO_ADMIN_URL"], public_host=env["SPINUP_MONGO_HOST"], public_port=int(env["SPINUP_MONGO_PORT"]))
    rids = [uuid.uuid4() for _ in range(1500)]
    sem = asyncio.Semaphore(16)
    async def mk(r):
        async with sem: await d.create(r, MongoLimits(storage_mb=10))
    await asyncio.gather(*(mk(r) for r in rids))
    procs = {"mongo": stack_processes(stack)["mongo"]}
    pages = [rids[i:i+500] for i in range(0, 1500, 500)]
    for _ in range(3):
        for label, f in (("before (dbStats of every tenant with a user)", old_usage), ("after (listDatabases first)", lambda d, p: d.usage(p))):
            m = CpuMeter(procs); m.start(); t = time.perf_counter()
            for p in pages:
                u = await f(d, p)
            assert len(u) == 500 and set(u.values()) == {0}
            print(f"{label}: 1,500 unused tenants, 3 pages: {m.per_call(1)} {(time.perf_counter()-t)*1000:.0f} ms wall", flush=True)
with bench_stack(durable=False, name="musage", production_periods=True) as stack:
    uvloop.run(main(stack))
