"""A/B: createUser CPU on secantusd at 15,000 vs 5,000 SCRAM iterations (server CPU from /proc)."""
import asyncio, os, secrets, subprocess, sys, time, statistics, socket
from pathlib import Path
from motor.motor_asyncio import AsyncIOMotorClient

def port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p

def start(tag, extra):
    d=Path(f"/tmp/scram/{tag}"); d.mkdir(parents=True, exist_ok=True)
    (d/"c.toml").write_text("#\n")
    p=port()
    proc=subprocess.Popen([sys.executable,"-m","devstack.secantusd","--config",str(d/"c.toml"),"--host","127.0.0.1","--port",str(p),"--storage-path",str(d/"wt"),"--cache-size","64M","--log-level","WARNING",*extra],cwd="/work/main",stdout=open(d/"log","w"),stderr=subprocess.STDOUT)
    return proc,p

def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")

async def load(p, n, c, tag):
    cl=AsyncIOMotorClient(f"mongodb://127.0.0.1:{p}/",directConnection=True)
    await cl.admin.command("ping")
    sem=asyncio.Semaphore(c); lat=[]
    async def one(i):
        async with sem:
            name=f"t_{secrets.token_hex(8)}"
            t=time.perf_counter()
            await cl[name].command({"createUser":name,"pwd":secrets.token_urlsafe(24),"roles":[{"role":"readWrite","db":name}],"mechanisms":["SCRAM-SHA-256"]})
            lat.append(time.perf_counter()-t)
    t=time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    el=time.perf_counter()-t
    cl.close()
    return n/el, statistics.median(lat)*1000

async def main():
    a,pa=start("a",["--setParameter","scramSHA256IterationCount=5000"])
    b,pb=start("b",[])
    await asyncio.sleep(4)
    for r in range(3):
        for tag,proc,p in (("A 5000",a,pa),("B 15000",b,pb)) if r%2==0 else (("B 15000",b,pb),("A 5000",a,pa)):
            c0=cpu(proc.pid); rate,p50=await load(p,400,16,tag); c1=cpu(proc.pid)
            print(f"round {r} {tag}: {rate:.0f}/s c16 p50 {p50:.2f} ms, server CPU {(c1-c0)/400*1000:.2f} ms/create",flush=True)
    # check: verifier iterations and a login
    cl=AsyncIOMotorClient(f"mongodb://127.0.0.1:{pa}/",directConnection=True)
    await cl.x1.command({"createUser":"u1","pwd":"pw-123456","roles":[{"role":"readWrite","db":"x1"}]})
    info=await cl.x1.command({"usersInfo":"u1","showCredentials":True})
    print(info["users"][0]["credentials"]["SCRAM-SHA-256"]["iterationCount"])
    print(await cl.admin.command({"getParameter":1,"scramSHA256IterationCount":1}))
    u=AsyncIOMotorClient(f"mongodb://u1:pw-123456@127.0.0.1:{pa}/x1?authSource=x1",directConnection=True)
    await u.x1.c.insert_one({"a":1}); print("login ok", await u.x1.c.count_documents({}))
    a.terminate(); b.terminate()
asyncio.run(main())
