"""What Litestar costs per request against a bare ASGI handler, on the gateway's server settings.

    .venv/bin/python -m bench.asgi_floor [--calls 4000] [--rounds 3]

Serves the same JSON answer two ways, each in a process of its own under uvicorn as the gateway
configures it (uvloop, httptools, no access log): a bare ASGI callable, and a Litestar app with
one ``GET`` route returning a msgspec Struct (the gateway's shape, without its middleware,
dependencies or admission). Both are called at c=16 by this process, alternately over
``--rounds``, and the CPU the server process spent per request is read from ``/proc``. The
difference is what a create would save on HTTP alone if its route bypassed the framework.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from typing import Any

import aiohttp
import msgspec
import uvloop

from bench.cpu import CpuMeter
from bench.measure import measure
from devstack.procs import free_ports

_BODY = b'{"status":"ok"}'


class _Health(msgspec.Struct):
    status: str


async def _bare(scope: dict[str, Any], _receive: Any, send: Any) -> None:  # noqa: ANN401
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": _BODY})


def _litestar() -> Any:  # noqa: ANN401  (a Litestar app)
    from litestar import Litestar, get  # noqa: PLC0415  (only in the server process)

    @get("/")
    async def health() -> _Health:
        return _Health(status="ok")

    return Litestar(route_handlers=[health], openapi_config=None)


def _serve(kind: str, port: int) -> None:
    import uvicorn  # noqa: PLC0415  (only in the server process)

    app = _bare if kind == "bare" else _litestar()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
    )


async def _measure_server(kind: str, calls: int) -> float:
    """CPU milliseconds the server spent per request at c=16."""
    port = free_ports(1)[0]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.asgi_floor", "--serve", kind, "--port", str(port)
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=16)) as http:
            for _ in range(100):
                try:
                    async with http.get("/") as response:
                        await response.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

            async def call(_: int) -> None:
                async with http.get("/") as response:
                    await response.read()

            meter = CpuMeter({"server": server.pid})
            meter.start()
            measured = await measure(kind, call, calls=calls, concurrency=16)
            return meter.per_call(measured.calls).get("server", 0.0)
    finally:
        server.terminate()
        await server.wait()


async def _compare(calls: int, rounds: int) -> list[str]:
    spent: dict[str, list[float]] = {"bare": [], "litestar": []}
    for number in range(rounds):
        for kind in ("bare", "litestar") if number % 2 == 0 else ("litestar", "bare"):
            spent[kind].append(await _measure_server(kind, calls))
            await asyncio.sleep(0.5)  # the ended server's port and CPU settle
    bare, framework = (statistics.median(spent[k]) for k in ("bare", "litestar"))
    return [
        f"server CPU per GET at c=16 (medians of {rounds} rounds of {calls}):",
        f"  bare ASGI  {bare:.3f} ms  {spent['bare']}",
        f"  Litestar   {framework:.3f} ms  {spent['litestar']}",
        f"  Litestar adds {framework - bare:.3f} ms per request",
    ]


def main() -> None:
    """Measure both servers, alternately, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=("bare", "litestar"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return
    print("\n".join(uvloop.run(_compare(args.calls, args.rounds))))  # noqa: T201


if __name__ == "__main__":
    main()
