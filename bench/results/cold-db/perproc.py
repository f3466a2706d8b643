"""Cold creates on an ab stack (pool off); CPU of each customer-pg process by its title."""
import asyncio, os, sys, time, collections, subprocess
import uvloop
sys.path.insert(0, "/work/main")
from bench.__main__ import bench_stack
from bench.ab import _measure_kind, _restart
from bench.harness import PG_POOL_SETTING
from shared.contracts.kinds import ResourceKind

TCK = os.sysconf("SC_CLK_TCK")

def tree(root):
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == root or int(pid) == root:
                f = stat.rsplit(")", 1)[1].split()
                title = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
                out[int(pid)] = (title, (int(f[11]) + int(f[12])) / TCK)
        except OSError:
            pass
    return out

async def run(stack):
    stack.service_env_overrides[PG_POOL_SETTING] = "0"
    await asyncio.to_thread(_restart, stack, ["pg-provisioner"], {}, on=True)
    processes = {n: p.pid for n, p in {**stack.servers, **stack.services}.items() if p.pid is not None}
    root = stack.servers["customer-pg"].pid
    from bench.ab import until_quiet
    for r in range(3):
        await until_quiet(processes, below_cores=0.15, within_s=60)
        before = tree(root)
        t = time.perf_counter()
        res = await _measure_kind(stack.gateway_url, ResourceKind.POSTGRES, processes, 120, 30)
        after = tree(root)
        by = collections.Counter()
        for pid, (title, cpu) in after.items():
            key = " ".join(title.split()[:3]) if "CREATE" not in title else "backend"
            key = title.split(":")[1].strip().split()[0] if ":" in title else title[:40]
            by[key] += cpu - before.get(pid, (title, 0.0))[1]
        print(r, "c1 p50", res["c1_p50_ms"], "c16/s", res["c16_per_s"], "customer-pg ms/create", res["cpu_ms_by_process"].get("customer-pg"), {k: round(v, 2) for k, v in by.most_common(8)}, flush=True)

with bench_stack(durable=False, name="ab") as stack:
    uvloop.run(run(stack))
