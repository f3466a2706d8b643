"""The ``spinup`` command line against the running platform, as a user runs it.

Most commands run in-process (``main([...])``, output through capsys); one run goes through the
installed console script to prove the entry point works. Every connection string the CLI writes
is used with the real client library of its kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiobotocore.session import get_session
from nats.aio.client import Client as NatsClient
from spinup_cli.dotenv import KeyExistsError, quoted, write_block
from spinup_cli.main import main

from devstack.stack import Stack
from tests.e2e.conftest import PASSWORD, new_email, one_service_app, register

SPINUP = Path(sys.executable).parent / "spinup"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``run("db", "new")`` → (exit code, stdout, stderr), in a fresh HOME and working dir."""
    monkeypatch.setenv("SPINUP_URL", stack.gateway_url)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("SPINUP_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def read_env(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a .env file (quotes as the CLI writes them, undone)."""
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if value.startswith("'"):
                value = value[1:-1]
            elif value.startswith('"'):
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            values[key] = value
    return values


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def spinup_process(stack: Stack, home: Path, *args: str) -> asyncio.subprocess.Process:
    """The installed ``spinup`` console script, started in ``home`` against the test stack."""
    return await asyncio.create_subprocess_exec(
        SPINUP,
        *args,
        cwd=home,
        env={**os.environ, "SPINUP_URL": stack.gateway_url, "HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def select_one(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("select 1"))
    finally:
        await conn.close()


async def test_db_new_writes_env_refuses_overwrite_and_forces(
    cli: Run, stack: Stack, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# my app\nAPP_MODE=dev\n")
    env_file.chmod(0o644)

    # Through the installed console script, as a user types it.
    first = await spinup_process(stack, tmp_path, "db", "new", "--env", ".env")
    out, err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, err.decode()
    assert "Wrote DATABASE_URL to .env" in out.decode()
    text = env_file.read_text()
    assert text.startswith("# my app\nAPP_MODE=dev\n")
    comments = [line for line in text.splitlines() if line.startswith("# spinup:")]
    assert any("Expires" in line and "UTC" in line for line in comments), text
    assert any("/claim?t=" in line for line in comments), text
    url = read_env(env_file)["DATABASE_URL"]
    assert url.startswith("postgresql://")
    assert await select_one(url) == 1

    code, _, err = cli("db", "new", "--env", ".env")
    assert code == 1
    assert "already sets DATABASE_URL" in err
    assert "--force" in err
    assert env_file.read_text() == text

    code, out, err = cli("db", "new", "--env", ".env", "--force")
    assert code == 0, err
    assert "Wrote DATABASE_URL" in out
    replaced = env_file.read_text()
    assert replaced.count("DATABASE_URL=") == 1
    assert replaced.count("# spinup:") == len(comments)
    assert "APP_MODE=dev" in replaced
    new_url = read_env(env_file)["DATABASE_URL"]
    assert new_url != url
    assert await select_one(new_url) == 1

    # --force never loses the old token: the old database lives on (its data may matter), the
    # CLI says so and how to delete it, and the local record keeps its token.
    old_token = next(
        line.split("rm ", 1)[1].strip() for line in comments if "spinup show|rotate|rm" in line
    )
    assert "still exists" in err, err
    assert f"spinup rm {old_token}" in err, err
    assert await select_one(url) == 1
    code, out, err = cli("ls")
    assert code == 0, err
    assert old_token in out
    code, out, err = cli("rm", old_token)
    assert code == 0, err
    # Removing the old one leaves the new settings alone.
    assert read_env(env_file)["DATABASE_URL"] == new_url


async def test_new_env_file_is_created_private_under_another_key(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("db", "new", "--env", "app.env", "--key", "TEST_DATABASE_URL")
    assert code == 0, err
    env_file = tmp_path / "app.env"
    assert file_mode(env_file) == 0o600
    assert await select_one(read_env(env_file)["TEST_DATABASE_URL"]) == 1


async def test_queue_and_storage_env_settings_work(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = cli("queue", "new", "--env", ".env")
    assert code == 0, err
    assert "Wrote NATS_URL, NATS_CREDS to .env" in out
    code, out, err = cli("storage", "new", "--env", ".env")
    assert code == 0, err
    settings = read_env(tmp_path / ".env")

    creds_file = Path(settings["NATS_CREDS"])
    assert creds_file.parent == tmp_path
    assert file_mode(creds_file) == 0o600
    nats_client = NatsClient()
    try:
        await nats_client.connect(
            settings["NATS_URL"],
            user_credentials=str(creds_file),
            allow_reconnect=False,
            connect_timeout=5,
        )
        info = await nats_client.jetstream().account_info()
        assert info.limits.max_storage > 0
    finally:
        await nats_client.close()

    assert {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "S3_BUCKET",
    } <= settings.keys()
    # An AWS SDK given nothing but the environment finds the endpoint, keys and region itself.
    for name, value in settings.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    async with get_session().create_client("s3") as s3:
        await s3.put_object(Bucket=settings["S3_BUCKET"], Key="hello.txt", Body=b"hello")
        listed = await s3.list_objects_v2(Bucket=settings["S3_BUCKET"])
    assert [item["Key"] for item in listed["Contents"]] == ["hello.txt"]


async def test_seed_creates_a_table(cli: Run, tmp_path: Path) -> None:
    seed = tmp_path / "seed.sql"
    seed.write_text(
        "create table fruit (name text);\ninsert into fruit values ('apple'), ('pear');\n"
    )
    code, out, err = cli("db", "new", "--seed", "seed.sql", "--json")
    assert code == 0, err
    created = json.loads(out)
    conn = await asyncpg.connect(created["connection_url"])
    try:
        names = await conn.fetch("select name from fruit order by name")
    finally:
        await conn.close()
    assert [row["name"] for row in names] == ["apple", "pear"]


async def test_seed_that_fails_says_so(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.sql").write_text("select * from no_such_table;\n")
    code, _, err = cli("db", "new", "--seed", "bad.sql")
    assert code == 1
    assert "seed bad.sql failed" in err
    assert "no_such_table" in err

    code, _, err = cli("db", "new", "--seed", "missing.sql")
    assert code == 2
    assert "missing.sql does not exist" in err


async def test_cache_new_json(cli: Run) -> None:
    code, out, err = cli("cache", "new", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["kind"] == "redis"
    assert created["connection_url"].startswith("redis://")
    client = aioredis.from_url(created["connection_url"])
    try:
        key = f"{created['credentials']['key_prefix']}greeting"
        await client.set(key, "hello")
        assert await client.get(key) == b"hello"
    finally:
        await client.aclose()


async def test_login_ls_claim_rm_show_logout(
    cli: Run, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    email = new_email("cli")
    await register(http, email)

    code, out, err = cli("cache", "new", "--json")
    assert code == 0, err
    anonymous: dict[str, Any] = json.loads(out)

    # Without an account: what this machine made, from the local record.
    code, out, err = cli("ls")
    assert code == 0, err
    assert "Made from this machine" in out
    assert anonymous["token"] in out
    assert "active" in out

    code, out, err = cli("login", "--email", email, "--password", PASSWORD)
    assert code == 0, err
    credentials = tmp_path / ".config" / "spinup" / "credentials"
    assert file_mode(credentials) == 0o600

    code, out, err = cli("db", "new", "--name", "cli-owned", "--json")
    assert code == 0, err
    owned: dict[str, Any] = json.loads(out)
    assert owned["expires_at"] is None

    code, out, err = cli("claim", anonymous["claim_url"])
    assert code == 0, err
    assert anonymous["id"] in out

    code, out, err = cli("ls")
    assert code == 0, err
    assert owned["id"] in out
    assert "cli-owned" in out
    assert anonymous["id"] in out

    code, out, err = cli("rm", owned["id"])
    assert code == 0, err
    assert f"Deleted {owned['id']}" in out

    code, _, err = cli("show", owned["token"])
    assert code == 1
    # A deleted resource is not found (resource_gone is for an expired one).
    assert err.startswith("error: not_found: "), err

    code, out, err = cli("logout")
    assert code == 0, err
    code, out, err = cli("ls")
    assert code == 0, err
    assert "Made from this machine" in out
    # Deleted with rm: gone from the record too.
    assert owned["token"] not in out


async def test_webhook_logs_and_follow(cli: Run, stack: Stack, tmp_path: Path) -> None:
    code, out, err = cli("webhook", "new", "--json", "--env", ".env")
    assert code == 0, err
    created = json.loads(out)
    receive_url = created["credentials"]["receive_url"]
    assert read_env(tmp_path / ".env") == {"WEBHOOK_URL": receive_url}
    async with httpx.AsyncClient(timeout=30) as client:
        sent = await client.post(f"{receive_url}/first", content="hello-first")
        assert sent.status_code < 300, sent.text

    code, out, err = cli("logs", created["token"])
    assert code == 0, err
    assert "POST" in out
    assert "hello-first" in out

    follower = await spinup_process(stack, tmp_path, "logs", "-f", created["token"])
    assert follower.stdout is not None
    try:
        first_line = await asyncio.wait_for(follower.stdout.readline(), 20)
        assert b"hello-first" in first_line
        # Sent until the follower prints one: its stream may open just after a send.
        async with httpx.AsyncClient(timeout=30) as client:

            async def keep_sending() -> None:
                while True:
                    await client.put(f"{receive_url}/live", content="hello-live")
                    await asyncio.sleep(0.5)

            sender = asyncio.create_task(keep_sending())
            try:
                line = (await asyncio.wait_for(follower.stdout.readline(), 20)).decode()
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        assert "PUT" in line
        assert "hello-live" in line
        code, _, err = cli("rm", created["token"])
        assert code == 0, err
        # Deleting the receiver ends the stream with a `closed` event, and the command with 0.
        assert await asyncio.wait_for(follower.wait(), 30) == 0
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()


async def test_errors_unreachable_and_usage(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli("show", "no-such-token")
    assert code == 1
    assert "error: " in err

    monkeypatch.setenv("SPINUP_URL", "http://127.0.0.1:9")
    code, _, err = cli("show", "anything")
    assert code == 1
    assert "Spinup is not reachable at http://127.0.0.1:9: is `make run` going?" in err

    code, _, err = cli("db")
    assert code == 2
    assert "usage: spinup db" in err

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = cli("login")
    assert code == 2
    assert "--email and --password" in err


@pytest.mark.parametrize(
    "command",
    [
        [],
        *([kind, "new"] for kind in ("db", "cache", "nosql", "queue", "storage", "webhook")),
        *([kind] for kind in ("db", "cache", "nosql", "queue", "storage", "webhook")),
        ["ls"],
        ["show"],
        ["rm"],
        ["rotate"],
        ["stop"],
        ["start"],
        ["restart"],
        ["redeploy"],
        ["plans"],
        ["whoami"],
        ["tokens"],
        ["tokens", "ls"],
        ["tokens", "new"],
        ["tokens", "rm"],
        ["logs"],
        ["claim"],
        ["login"],
        ["logout"],
    ],
)
def test_help_on_every_command(cli: Run, command: list[str]) -> None:
    code, out, _ = cli(*command, "--help")
    assert code == 0
    assert out.startswith(f"usage: spinup {' '.join(command)}".rstrip())


def test_env_block_replaced_in_place_and_values_quoted(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    write_block(env_file, ["first"], {"DATABASE_URL": "postgresql://a"})
    env_file.write_text(f"BEFORE=1\n{env_file.read_text()}AFTER=2\n")
    with pytest.raises(KeyExistsError):
        write_block(env_file, ["second"], {"DATABASE_URL": "postgresql://b"})

    write_block(env_file, ["second"], {"DATABASE_URL": "it's $HOME"}, force=True)
    assert env_file.read_text().splitlines() == [
        "BEFORE=1",
        "# spinup: second",
        'DATABASE_URL="it\'s $HOME"',
        "AFTER=2",
    ]
    assert quoted("pass word$x") == "'pass word$x'"
    assert read_env(env_file)["DATABASE_URL"] == "it's $HOME"


async def test_deploy_builds_a_stack_waits_until_it_runs_and_rm_removes_it(
    stack: Stack, tmp_path: Path
) -> None:
    app = one_service_app(tmp_path / "app", "hello from the cli")

    deploying = await spinup_process(stack, tmp_path, "deploy", str(app), "--json")
    out, err = await asyncio.wait_for(deploying.communicate(), timeout=100)
    assert deploying.returncode == 0, err.decode()
    deployed = json.loads(out)
    assert deployed["shown"]["stack"]["status"] == "running", deployed["shown"]
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(deployed["urls"]["web"])
    assert page.text.strip() == "hello from the cli"

    # Every stack action has its command.
    stopping = await spinup_process(stack, tmp_path, "stop", deployed["token"], "--json")
    out, err = await asyncio.wait_for(stopping.communicate(), timeout=60)
    assert stopping.returncode == 0, err.decode()
    assert json.loads(out)["action"] == "stop"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        shown = (await http.get(f"/resources/{deployed['token']}")).json()
    assert shown["stack"]["status"] == "stopped", shown["stack"]

    removing = await spinup_process(stack, tmp_path, "rm", deployed["token"])
    _, err = await asyncio.wait_for(removing.communicate(), timeout=60)
    assert removing.returncode == 0, err.decode()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        gone = await http.get(f"/resources/{deployed['token']}")
    assert gone.status_code == 404


async def test_cache_env_has_the_prefix_and_rotate_and_rm_keep_it_true(
    cli: Run, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("APP_MODE=dev\n")
    code, out, err = cli("cache", "new", "--env", ".env", "--json")
    assert code == 0, err
    created = json.loads(out)
    settings = read_env(env_file)
    prefix = settings["REDIS_KEY_PREFIX"]
    assert prefix == created["credentials"]["key_prefix"]
    first = aioredis.Redis.from_url(settings["REDIS_URL"], decode_responses=True)
    try:
        await first.set(f"{prefix}greeting", "hi")
    finally:
        await first.aclose()

    code, out, err = cli("rotate", created["token"])
    assert code == 0, err
    assert "Updated REDIS_URL" in out, out
    rotated = read_env(env_file)
    assert rotated["REDIS_URL"] != settings["REDIS_URL"]
    assert rotated["REDIS_KEY_PREFIX"] == prefix
    fresh = aioredis.Redis.from_url(rotated["REDIS_URL"], decode_responses=True)
    try:
        assert await fresh.get(f"{prefix}greeting") == "hi"
    finally:
        await fresh.aclose()

    code, out, err = cli("rm", created["token"])
    assert code == 0, err
    assert "Removed REDIS_URL, REDIS_KEY_PREFIX from" in out, out
    assert env_file.read_text() == "APP_MODE=dev\n"
    code, out, err = cli("ls", "--json")
    assert code == 0, err
    assert json.loads(out) == []


async def test_rotate_rewrites_an_env_file_named_with_env(cli: Run, tmp_path: Path) -> None:
    code, out, err = cli("db", "new", "--env", "app.env", "--key", "TEST_DATABASE_URL", "--json")
    assert code == 0, err
    created = json.loads(out)
    # A copy the local record does not know of, named on the command line.
    copy = tmp_path / "copy.env"
    copy.write_text((tmp_path / "app.env").read_text())
    code, out, err = cli("rotate", created["token"], "--env", "copy.env")
    assert code == 0, err
    new_url = read_env(tmp_path / "app.env")["TEST_DATABASE_URL"]
    assert read_env(copy)["TEST_DATABASE_URL"] == new_url
    assert await select_one(new_url) == 1
    code, _, err = cli("rm", created["token"])
    assert code == 0, err


async def test_access_token_commands(cli: Run, http: httpx.AsyncClient) -> None:
    email = new_email("cli-tokens")
    await register(http, email)
    code, _, err = cli("login", "--email", email, "--password", PASSWORD)
    assert code == 0, err
    code, out, err = cli("whoami")
    assert code == 0, err
    assert email in out

    code, out, err = cli("tokens", "new", "--name", "ci", "--json")
    assert code == 0, err
    issued = json.loads(out)
    assert issued["token"].startswith("spp_")
    assert sorted(issued["access_token"]["scopes"]) == ["provision", "read"]
    code, out, err = cli("tokens", "ls")
    assert code == 0, err
    assert issued["access_token"]["id"] in out
    assert "ci" in out

    code, out, err = cli("tokens", "rm", issued["access_token"]["id"])
    assert code == 0, err
    assert "Revoked" in out
    refused = await http.get("/auth/user", headers={"Authorization": f"Bearer {issued['token']}"})
    assert refused.status_code == 401

    code, out, err = cli("plans")
    assert code == 0, err
    assert "(without an account): resources live 24 h" in out
    assert "resources are permanent" in out
    assert "live permanent" not in out


async def nats_account_storage(url: str, creds_file: Path) -> int:
    client = NatsClient()
    try:
        await client.connect(
            url, user_credentials=str(creds_file), allow_reconnect=False, connect_timeout=5
        )
        info = await client.jetstream().account_info()
        return int(info.limits.max_storage)
    finally:
        await client.close()


async def test_queue_rotate_rewrites_the_creds_file_and_rm_removes_it(
    cli: Run, tmp_path: Path
) -> None:
    code, out, err = cli("queue", "new", "--env", ".env", "--json")
    assert code == 0, err
    created = json.loads(out)
    settings = read_env(tmp_path / ".env")
    # Beside the .env (test_queue_and_storage_env_settings_work checks the path).
    creds_file = tmp_path / settings["NATS_CREDS"].rsplit("/", 1)[-1]
    old_creds = creds_file.read_text()

    code, out, err = cli("rotate", created["token"])
    assert code == 0, err
    assert creds_file.read_text() != old_creds
    assert file_mode(creds_file) == 0o600
    assert await nats_account_storage(read_env(tmp_path / ".env")["NATS_URL"], creds_file) > 0

    code, out, err = cli("rm", created["token"])
    assert code == 0, err
    assert not creds_file.exists()
    assert "NATS" not in (tmp_path / ".env").read_text()
