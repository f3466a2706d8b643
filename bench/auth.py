"""What accounts cost: argon2id hashing, register and login over HTTP, and authenticating a request.

    .venv/bin/python bench/auth.py [--rounds 50] [--url http://127.0.0.1:8080]

Without ``--url`` it starts a throwaway stack (``.spinup/auth-bench``, free ports) and stops it
afterwards. HTTP calls are sequential over one keep-alive connection (latency, not throughput),
except the burst, which sends ``--burst`` logins at once and meanwhile measures ``GET /healthz``:
hashing runs in worker threads, so the event loop should keep answering.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from functools import partial

import httpx

from bench.measure import gateway_url, summary, timed_http
from gateway.accounts.store import Passwords

PASSWORD = "correct horse battery staple"  # noqa: S105  (a bench account's)


async def hashing(rounds: int) -> None:
    """argon2id in this process, through the gateway's own ``Passwords``."""
    passwords = Passwords()
    hashes, took = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        hashes.append(await passwords.hash(PASSWORD))
        took.append(time.perf_counter() - began)
    print(summary("argon2id hash (in process)", took))  # noqa: T201
    verifies = []
    for stored in hashes:
        began = time.perf_counter()
        await passwords.verify(stored, PASSWORD)
        verifies.append(time.perf_counter() - began)
    print(summary("argon2id verify (in process)", verifies))  # noqa: T201


async def over_http(url: str, rounds: int, burst: int) -> None:
    """Every HTTP measurement against the gateway at ``url``."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        emails = [f"bench-{uuid.uuid4().hex[:12]}@example.com" for _ in range(rounds)]
        registers = [
            await timed_http(
                partial(http.post, "/auth/register", json={"email": e, "password": PASSWORD}), 201
            )
            for e in emails
        ]
        print(summary("POST /auth/register", registers))  # noqa: T201
        login = {"email": emails[0], "password": PASSWORD}
        logins = [
            await timed_http(lambda: http.post("/auth/login", json=login), 200) for _ in emails
        ]
        print(summary("POST /auth/login", logins))  # noqa: T201
        wrong = {"email": emails[0], "password": PASSWORD + "!"}
        wrongs = [
            await timed_http(lambda: http.post("/auth/login", json=wrong), 401) for _ in emails
        ]
        print(summary("POST /auth/login (wrong password)", wrongs))  # noqa: T201
        unknown = {"email": "nobody-" + emails[0], "password": PASSWORD}
        unknowns = [
            await timed_http(lambda: http.post("/auth/login", json=unknown), 401) for _ in emails
        ]
        print(summary("POST /auth/login (unknown email)", unknowns))  # noqa: T201

        session = (await http.post("/auth/login", json=login)).json()["token"]
        as_session = {"Authorization": f"Bearer {session}"}
        pat = (
            await http.post(
                "/auth/tokens", json={"name": "bench", "scopes": ["read"]}, headers=as_session
            )
        ).json()["token"]
        as_pat = {"Authorization": f"Bearer {pat}"}
        many = rounds * 10
        plain = [await timed_http(lambda: http.get("/plans"), 200) for _ in range(many)]
        print(summary("GET /plans (no auth, baseline)", plain))  # noqa: T201
        by_session = [
            await timed_http(lambda: http.get("/auth/user", headers=as_session), 200)
            for _ in range(many)
        ]
        print(summary("GET /auth/user (session JWT)", by_session))  # noqa: T201
        by_pat = [
            await timed_http(lambda: http.get("/auth/user", headers=as_pat), 200)
            for _ in range(many)
        ]
        print(summary("GET /auth/user (access token)", by_pat))  # noqa: T201

        await during_a_burst(http, login, burst)


async def during_a_burst(http: httpx.AsyncClient, login: dict[str, str], burst: int) -> None:
    """``burst`` logins at once, and /healthz latency while they hash."""
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as probe:
        health: list[float] = []
        done = asyncio.Event()

        async def probing() -> None:
            while not done.is_set():
                health.append(await timed_http(lambda: probe.get("/healthz"), 200))

        prober = asyncio.create_task(probing())
        began = time.perf_counter()
        answers = await asyncio.gather(
            *(http.post("/auth/login", json=login) for _ in range(burst))
        )
        took = time.perf_counter() - began
        done.set()
        await prober
    if any(answer.status_code != 200 for answer in answers):  # noqa: PLR2004
        msg = "a login of the burst failed"
        raise RuntimeError(msg)
    print(f"{burst} logins at once: all answered in {took * 1000:.0f} ms")  # noqa: T201
    print(summary("GET /healthz during that burst", health))  # noqa: T201


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--url", help="a running gateway (default: start a throwaway stack)")
    args = parser.parse_args()
    asyncio.run(hashing(max(5, args.rounds // 5)))
    with gateway_url(args.url, stack_name="auth-bench") as url:
        asyncio.run(over_http(url, args.rounds, args.burst))


if __name__ == "__main__":
    main()
