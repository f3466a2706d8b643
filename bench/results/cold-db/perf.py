import asyncio, os, sys, subprocess, time
import uvloop
sys.path.insert(0, "/work/main")
from bench.__main__ import bench_stack
from bench.ab import _measure_kind, _restart, until_quiet
from bench.harness import PG_POOL_SETTING
from shared.contracts.kinds import ResourceKind

async def run(stack):
    stack.service_env_overrides[PG_POOL_SETTING] = "0"
    await asyncio.to_thread(_restart, stack, ["pg-provisioner"], {}, on=True)
    processes = {n: p.pid for n, p in {**stack.servers, **stack.services}.items() if p.pid is not None}
    # grow the cluster first
    res = await _measure_kind(stack.gateway_url, ResourceKind.POSTGRES, processes, 200, 40)
    print("warm-up", res["c1_p50_ms"], res["c16_per_s"], res["cpu_ms_by_process"].get("customer-pg"), flush=True)
    await until_quiet(processes, below_cores=0.15, within_s=60)
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-o", "/tmp/cold/perf.data", "--", "sleep", "15"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = await _measure_kind(stack.gateway_url, ResourceKind.POSTGRES, processes, 200, 14)
    perf.wait()
    print("measured", res["c1_p50_ms"], res["c16_per_s"], res["cpu_ms_by_process"].get("customer-pg"), flush=True)

with bench_stack(durable=False, name="ab") as stack:
    uvloop.run(run(stack))
