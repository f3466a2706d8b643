"""/nosql/new at c=16 on a quiet disk and while another process writes and deletes GBs.

    .venv/bin/python bench/results/nosql-stalls/run.py   (from the repository's root)
"""
import asyncio, subprocess, sys, time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from bench.__main__ import bench_stack  # noqa: E402
from bench.harness import caller, gateway_connector  # noqa: E402

LOAD_FILE = ROOT / ".spinup" / "diskload"

async def phase(url, n, off):
    lat = []; per_s = {}
    async with aiohttp.ClientSession(url, connector=gateway_connector(16)) as http:
        sem = asyncio.Semaphore(16)
        async def one(i):
            async with sem:
                t = time.perf_counter()
                async with http.post("/nosql/new", headers=caller(off + i)) as r:
                    await r.read(); assert r.status == 201, r.status
                lat.append((time.perf_counter() - t) * 1000)
                sec = int(time.time()); per_s[sec] = per_s.get(sec, 0) + 1
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        dt = time.perf_counter() - t0
    lat.sort(); q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    full = [v for k, v in sorted(per_s.items())][1:-1] or [0]
    return f"{n/dt:6.0f}/s p50 {q(.5):6.1f} p99 {q(.99):7.1f} max {lat[-1]:7.1f} ms, slowest full second {min(full)}/s"

def main():
    with bench_stack(durable=False, name="scr") as stack:
        url = stack.gateway_url
        asyncio.run(phase(url, 1600, 0))  # tenants present, as in make bench
        for rnd in range(3):
            for loaded in (False, True):
                load = None
                if loaded:
                    load = subprocess.Popen(["bash", "-c", f"while true; do dd if=/dev/zero of={LOAD_FILE} bs=1M count=1500 conv=fsync status=none; rm -f {LOAD_FILE}; done"])
                    time.sleep(2)
                res = asyncio.run(phase(url, 1200, 100000 * (rnd * 2 + loaded + 1)))
                if load: load.kill(); load.wait(); LOAD_FILE.unlink(missing_ok=True)
                print(f"round {rnd} {'disk busy' if loaded else 'quiet    '}: {res}", flush=True)
                time.sleep(3)
main()
