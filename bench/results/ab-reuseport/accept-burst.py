import asyncio, os, socket, sys, time, signal, collections
import uvicorn, httpx
mode = sys.argv[1]; runs = int(sys.argv[2]); conns = int(sys.argv[3])
if mode == "single": os.environ["UV_TCP_SINGLE_ACCEPT"] = "1"
async def app(scope, receive, send):
    if scope["type"] != "http": return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": b"ok"})
port = 18777
socks = [socket.create_server(("127.0.0.1", port), backlog=2048, reuse_port=(mode=="reuse")) for _ in range(2 if mode=="reuse" else 1)]
kids=[]
for n in range(2):
    pid=os.fork()
    if pid==0:
        cfg=uvicorn.Config(app, loop="uvloop", http="httptools", log_config=None, access_log=False)
        uvicorn.Server(cfg).run([socks[n if mode=="reuse" else 0]]); os._exit(0)
    kids.append(pid)
time.sleep(1.5)
async def one_run():
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns)) as c:
        # connections opened together: each first request on its own connection
        rs = await asyncio.gather(*(c.get("/") for _ in range(conns)))
        return collections.Counter(r.headers["x-pid"] for r in rs)
shares=[]
for _ in range(runs):
    cnt = asyncio.run(one_run())
    shares.append(max(cnt.values()) if len(cnt)==2 else conns)
print(mode, "largest share of", conns, "per run:", sorted(shares))
for k in kids: os.kill(k, signal.SIGTERM)
