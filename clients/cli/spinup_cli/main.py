"""The ``spinup`` commands: create, deploy, list, show, delete, rotate, logs, claim, login.

``spinup <kind> new --env .env`` writes the new resource into ``.env`` like ``npx get-db``.

``SPINUP_URL`` (or ``--url``) names the API, ``SPINUP_TOKEN`` an access token that wins over the
session of ``spinup login``. Exit codes: 0 done, 1 the API or the environment refused, 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from spinup_cli.api import (
    DEFAULT_URL,
    EXIT_USAGE,
    CliError,
    SpinupClient,
    forget_session,
    spinner,
    store_session,
    stored_session,
)
from spinup_cli.dotenv import KeyExistsError, assigned_key, write_block, write_private


@dataclass(frozen=True)
class Kind:
    """A kind as the CLI knows it: API path and kind, what to call it, its ``.env`` key."""

    path: str
    api_kind: str
    label: str
    default_key: str
    article: str = "a"

    @property
    def one(self) -> str:
        """``a Postgres database``, ``an S3 bucket``."""
        return f"{self.article} {self.label}"


KINDS = {
    kind.path: kind
    for kind in (
        Kind("db", "postgres", "Postgres database", "DATABASE_URL"),
        Kind("cache", "redis", "Redis cache", "REDIS_URL"),
        Kind("nosql", "mongo", "MongoDB database", "MONGODB_URL"),
        Kind("queue", "nats", "NATS JetStream account", "NATS_URL"),
        # For storage --key is a prefix: S3_ENDPOINT, S3_BUCKET, ...
        Kind("storage", "s3", "S3 bucket", "S3", article="an"),
        Kind("webhook", "webhook", "webhook receiver", "WEBHOOK_URL"),
    )
}

# The S3 settings most SDKs and tools read, from the storage credentials.
S3_SETTINGS = {
    "ENDPOINT": "endpoint",
    "REGION": "region",
    "BUCKET": "bucket",
    "ACCESS_KEY_ID": "access_key",
    "SECRET_ACCESS_KEY": "secret_key",
}


HOUR_S = 3600
#: A webhook body longer than this is cut short in ``spinup logs``.
BODY_PREVIEW_CHARS = 200
#: ``spinup deploy`` waits this long for a stack to build and settle.
DEPLOY_WAIT_S = 600


def say(text: object = "", *, err: bool = False) -> None:
    """One line of output (``err``: on stderr, for progress and errors)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{text}\n")


def _print_json(value: object) -> None:
    say(json.dumps(value, indent=2))


def _when(iso: str | None) -> str:
    """An ISO timestamp as ``2026-11-24 08:40 UTC (in 23 h)``; ``never`` for ``None``."""
    if not iso:
        return "never"
    moment = datetime.fromisoformat(iso)
    seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds >= 2 * HOUR_S:
        left = f"in {round(seconds / HOUR_S)} h"
    elif seconds >= 0:
        left = f"in {max(1, round(seconds / 60))} min"
    else:
        left = "passed"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({left})"


# ---------------------------------------------------------------------------------- new ----


def connect_url(created: dict[str, Any]) -> str:
    """What an app connects to: ``connection_url``, or a webhook's ``receive_url``."""
    credentials: dict[str, Any] = created.get("credentials") or {}
    return str(created.get("connection_url") or credentials.get("receive_url"))


def creds_key(key: str) -> str:
    """The setting holding a queue's ``.creds`` path: ``NATS_URL`` → ``NATS_CREDS``."""
    return f"{key.removesuffix('_URL')}_CREDS"


def env_keys(kind: Kind, key: str) -> set[str]:
    """Every setting ``env_values`` may write for this kind under ``--key``."""
    if kind.path == "storage":
        return {f"{key}_{name}" for name in S3_SETTINGS}
    if kind.path == "queue":
        return {key, creds_key(key)}
    return {key}


def env_values(kind: Kind, key: str, created: dict[str, Any], env_file: Path) -> dict[str, str]:
    """The ``.env`` settings of a new resource.

    A queue's ``.creds`` text is several lines, which ``.env`` readers disagree about, so it is
    written to a file beside the ``.env`` (mode 0600) and ``<KEY>_CREDS`` holds that file's path.
    """
    credentials: dict[str, Any] = created.get("credentials") or {}
    if kind.path == "storage":
        return {
            f"{key}_{name}": str(credentials[field])
            for name, field in S3_SETTINGS.items()
            if credentials.get(field) is not None
        }
    values = {key: connect_url(created)}
    if kind.path == "queue" and credentials.get("creds"):
        # An absolute path: the app reading the .env may run from another directory.
        creds_file = env_file.parent.resolve() / f"spinup-queue-{str(created['id'])[:8]}.creds"
        write_private(creds_file, str(credentials["creds"]))
        values[creds_key(key)] = str(creds_file)
    return values


def env_comments(kind: Kind, created: dict[str, Any]) -> list[str]:
    """The comment lines above the settings: what it is, its expiry, how to keep or manage it."""
    name = f" {created['name']!r}" if created.get("name") else ""
    what = kind.label[0].upper() + kind.label[1:]
    lines = [f"{what}{name}, id {created['id']}, tier {created.get('tier', '?')}."]
    if created.get("expires_at"):
        lines.append(f"Expires {_when(created['expires_at'])} unless claimed.")
    else:
        lines.append("Belongs to your account: no expiry.")
    if created.get("claim_url"):
        lines.append(f"Claim it (spinup login, then spinup claim URL): {created['claim_url']}")
    lines.append(f"Manage it: spinup show|rotate|rm {created['token']}")
    return lines


def run_seed(url: str, seed: Path) -> None:
    """Run a SQL file against a new database with ``psql`` (stops at the first error)."""
    psql = shutil.which("psql")
    if psql is None:
        msg = (
            "The database was created but not seeded: psql is not on PATH. Install the PostgreSQL"
            f' client (apt-get install postgresql-client), then run: psql "$DATABASE_URL" -f {seed}'
        )
        raise CliError(msg)
    # The arguments are the psql found on PATH, the URL the API just returned and the user's file.
    result = subprocess.run(  # noqa: S603
        [psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = (
            f"The database was created but the seed {seed} failed (psql exit {result.returncode}):"
            f"\n{result.stderr.strip()}"
        )
        raise CliError(msg)


def cmd_new(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup <kind> new``: create one, print it, optionally write ``.env`` and seed it."""
    kind = KINDS[args.kind]
    seed: Path | None = args.seed
    # --seed exists only on `db new`; the file is checked before anything is created.
    if seed is not None and not seed.is_file():
        msg = f"Seed file {seed} does not exist."
        raise CliError(msg, EXIT_USAGE)
    env_file: Path | None = args.env
    key = args.key or kind.default_key
    if env_file is not None and not args.force and env_file.exists():
        # Checked before creating, so a refusal leaves nothing behind on the server.
        _refuse_taken_keys(env_file, kind, key)

    body = {"name": args.name} if args.name else None
    created = client.request(
        "POST", f"/{kind.path}/new", json_body=body, slow=f"creating {kind.one}"
    )

    if env_file is not None:
        values = env_values(kind, key, created, env_file)
        try:
            write_block(env_file, env_comments(kind, created), values, force=args.force)
        except KeyExistsError as taken:
            msg = f"{taken}; use --force to replace."
            raise CliError(msg) from None
    if seed is not None:
        run_seed(str(created["connection_url"]), seed)

    if args.json:
        _print_json(created)
    else:
        _print_created(kind, created)
        if env_file is not None:
            say(f"Wrote {', '.join(values)} to {env_file}")
        if seed is not None:
            say(f"Seeded with {seed}")
    return 0


def _refuse_taken_keys(env_file: Path, kind: Kind, key: str) -> None:
    keys = env_keys(kind, key)
    found = sorted(
        {k for line in env_file.read_text().splitlines() if (k := assigned_key(line)) in keys}
    )
    if found:
        msg = (
            f"{env_file} already sets {', '.join(found)}: use --force to replace it, or --key"
            " to write under another name."
        )
        raise CliError(msg)


def _print_created(kind: Kind, created: dict[str, Any]) -> None:
    say(f"Created {kind.one} (id {created['id']}, tier {created.get('tier')}).")
    rows = [("connection_url", created.get("connection_url"))]
    if kind.path == "webhook":
        rows = [("receive_url", connect_url(created))]
    credentials = created.get("credentials") or {}
    if kind.path == "storage":
        rows += [(field, credentials.get(field)) for field in S3_SETTINGS.values()]
    rows += [
        ("token", f"{created['token']}  (keep it: spinup show|rotate|rm TOKEN)"),
        ("expires", _when(created.get("expires_at"))),
    ]
    if created.get("claim_url"):
        rows.append(("claim", created["claim_url"]))
    for label, value in rows:
        if value is not None:
            say(f"  {label + ':':<16}{value}")


# --------------------------------------------------------------------- resource commands ----


def cmd_ls(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup ls``: the account's resources."""
    client.require_login("list your resources")
    path = f"/resources?kind={KINDS[args.kind].api_kind}" if args.kind else "/resources"
    resources = client.request("GET", path)["resources"]
    if args.json:
        _print_json(resources)
        return 0
    if not resources:
        say("No resources. Create one: spinup db new")
        return 0
    say(f"{'ID':<36}  {'KIND':<8}  {'STATUS':<8}  {'NAME':<16}  EXPIRES")
    for item in resources:
        name = item.get("name") or "-"
        say(
            f"{item['id']:<36}  {item['kind']:<8}  {item['status']:<8}  {name:<16}"
            f"  {_when(item.get('expires_at'))}"
        )
    return 0


def cmd_show(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup show``: status, limits, usage, expiry and credentials of one resource."""
    info = client.request("GET", f"/resources/{args.resource}")
    if args.json:
        _print_json(info)
        return 0
    say(f"{info['kind']} {info['id']}" + (f" ({info['name']})" if info.get("name") else ""))
    rows = [
        ("status", info.get("status")),
        ("tier", info.get("tier")),
        ("claimed", info.get("claimed")),
        ("created", info.get("created_at")),
        ("expires", _when(info.get("expires_at"))),
        ("connection_url", info.get("connection_url")),
        ("limits", json.dumps(info.get("limits"))),
        ("usage", json.dumps(info.get("usage"))),
    ]
    for label, value in rows:
        if value is not None:
            say(f"  {label + ':':<16}{value}")
    return 0


def cmd_rm(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup rm``: delete a resource now."""
    gone = client.request("DELETE", f"/resources/{args.resource}", slow="deleting")
    say(f"Deleted {gone['id']} (status {gone['status']}); its credentials no longer work.")
    return 0


def cmd_rotate(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup rotate``: new credentials; the old ones stop working at once."""
    issued = client.request("POST", f"/resources/{args.resource}/rotate", slow="rotating")
    if args.json:
        _print_json(issued)
        return 0
    say(f"New credentials for {issued['kind']} {issued['id']}; the old ones no longer work.")
    if issued.get("connection_url"):
        say(f"  connection_url: {issued['connection_url']}")
    say(f"  {issued.get('note', '')}")
    return 0


def _print_request(request: dict[str, Any]) -> None:
    query = f"?{request['query']}" if request.get("query") else ""
    body = request.get("body") or ""
    if request.get("body_encoding") == "base64":
        body = f"<{request.get('size')} bytes, base64>"
    elif len(body) > BODY_PREVIEW_CHARS:
        body = body[:BODY_PREVIEW_CHARS] + "…"
    say(f"{request['received_at']}  {request['method']:<6} {request['path']}{query}  {body}")


def _print_log_line(data: str) -> None:
    try:
        line = json.loads(data)
    except ValueError:
        say(data)
        return
    say(f"{line.get('at', '')[:19]}  {line.get('source', ''):<14} {line.get('line', '')}")


def stack_logs(client: SpinupClient, token: str, *, follow: bool) -> int:
    """Print a stack's build and container logs; ``follow`` keeps printing new lines."""
    path = f"/resources/{token}/logs" + ("?follow=1" if follow else "")
    if follow:
        say("Following the stack's logs (Ctrl-C stops)…", err=True)
    try:
        for event, data in client.stream_events(path):
            if event == "log":
                _print_log_line(data)
                sys.stdout.flush()
            elif event == "closed":
                say(data, err=True)
                return 0
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_logs(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup logs``: a stack's logs, or a webhook receiver's requests; ``-f`` follows."""
    shown = client.request("GET", f"/resources/{args.token}")
    if shown.get("kind") == "stack":
        return stack_logs(client, args.token, follow=args.follow)
    kept = client.request("GET", f"/webhook/{args.token}/requests")
    for request in reversed(kept["requests"]):
        _print_request(request)
    if not args.follow:
        return 0
    say("Following new requests (Ctrl-C stops)…", err=True)
    try:
        for event, data in client.stream_events(f"/webhook/{args.token}/stream"):
            if event == "request":
                _print_request(json.loads(data))
                sys.stdout.flush()
            elif event == "closed":
                say(data, err=True)
                return 0
    except KeyboardInterrupt:
        return 130
    return 0


def build_context(directory: Path, service: str, build: str) -> bytes:
    """The tarball a service's ``build:`` names: the file itself, or a directory tarred."""
    named = directory / build
    if named.is_file():
        return named.read_bytes()
    for candidate in (directory / build.removesuffix(".tar"), directory / service):
        if candidate.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for path in sorted(candidate.iterdir()):
                    tar.add(path, arcname=path.name)
            return buffer.getvalue()
    msg = (
        f"services.{service}.build names {build!r}: put that tarball in {directory}, or the"
        f" build context in {directory / build.removesuffix('.tar')}/ or {directory / service}/."
    )
    raise CliError(msg, EXIT_USAGE)


def stack_upload(directory: Path) -> dict[str, tuple[str, bytes]]:
    """``POST /stacks/new``'s files for the app in ``directory``."""
    manifest_path = directory / "spinup.yaml"
    if not manifest_path.is_file():
        msg = f"{directory} has no spinup.yaml: see examples/notes-app for one."
        raise CliError(msg, EXIT_USAGE)
    text = manifest_path.read_bytes()
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{manifest_path} is not valid YAML: {exc}"
        raise CliError(msg, EXIT_USAGE) from None
    files = {"spinup.yaml": ("spinup.yaml", text)}
    services = manifest.get("services") if isinstance(manifest, dict) else None
    for service, spec in (services or {}).items():
        build = spec.get("build") if isinstance(spec, dict) else None
        if isinstance(build, str):
            files[build] = (build, build_context(directory, str(service), build))
    return files


def cmd_deploy(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup deploy DIR``: upload, wait until running (or failed), print the URLs."""
    created = client.upload("/stacks/new", stack_upload(args.directory), slow="uploading")
    if args.json and args.no_wait:
        _print_json(created)
        return 0
    token = created["token"]
    shown: dict[str, Any] = {}
    if not args.no_wait:
        with spinner("building"):
            deadline = time.monotonic() + DEPLOY_WAIT_S
            while time.monotonic() < deadline:
                shown = client.request("GET", f"/resources/{token}")
                if shown["stack"]["status"] in {"running", "failed"}:
                    break
                time.sleep(1)
    if args.json:
        _print_json({**created, "shown": shown})
        return 0
    status = shown.get("stack", {}).get("status", created["status"])
    say(f"Stack {created['id']}: {status}")
    say(f"  token: {token}  (keep it: it manages the stack)")
    for name, url in created["urls"].items():
        say(f"  {name}: {url}")
    for name, resource in created["resources"].items():
        say(f"  {name} ({resource['kind']}): {resource.get('connection_url') or resource['id']}")
    say(f"  logs: spinup logs -f {token}")
    if status == "failed":
        stack = shown["stack"]
        say(f"Failed in {stack.get('failed_service')}: {stack.get('failure')}", err=True)
        say(stack.get("logs_tail") or "", err=True)
        return 1
    say(f"  {created['note']}")
    return 0


def claim_token_of(value: str) -> str:
    """The claim token in a ``claim_url`` (its ``t`` parameter), or ``value`` itself."""
    if "://" in value or value.startswith("/claim"):
        tokens = parse_qs(urlsplit(value).query).get("t")
        if not tokens:
            msg = f"{value} has no ?t=… claim token."
            raise CliError(msg, EXIT_USAGE)
        return tokens[0]
    return value


def cmd_claim(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup claim``: move anonymous resources into your account."""
    client.require_login("claim resources")
    result = client.request(
        "POST", "/claim", json_body={"token": claim_token_of(args.claim)}, slow="claiming"
    )
    if args.json:
        _print_json(result)
        return 0
    say(result.get("note", "Claimed."))
    for item in result.get("resources", []):
        say(f"  {item['kind']:<8} {item['id']}  tier {item['tier']}")
    return 0


# ------------------------------------------------------------------------------ account ----


def cmd_login(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup login``: exchange email and password for a session token and keep it."""
    try:
        email = args.email or input("Email: ").strip()
        password = args.password or getpass.getpass("Password: ")
    except EOFError:
        msg = "No email or password given: pass --email and --password, or run it in a terminal."
        raise CliError(msg, EXIT_USAGE) from None
    path = "/auth/register" if args.register else "/auth/login"
    session = client.request("POST", path, json_body={"email": email, "password": password})
    stored = store_session(client.url, str(session["token"]), email)
    verb = "Registered and logged in" if args.register else "Logged in"
    say(f"{verb} as {email} at {client.url} (session kept in {stored}).")
    return 0


def cmd_logout(client: SpinupClient, _args: argparse.Namespace) -> int:
    """``spinup logout``: end the stored session here and on the server."""
    session = stored_session(client.url)
    if session is None:
        say(f"Not logged in at {client.url}.")
        return 0
    with SpinupClient(client.url, session["token"]) as own:
        try:
            own.request("POST", "/auth/logout")
        except CliError as refused:
            # The local session is removed regardless: an expired one is already logged out.
            say(f"(the server said: {refused})", err=True)
    forget_session(client.url)
    say(f"Logged out of {client.url}.")
    return 0


# ------------------------------------------------------------------------------- parser ----

Command = Callable[[SpinupClient, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each command's ``--help`` comes from here."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the Spinup API (default: $SPINUP_URL or {DEFAULT_URL})",
    )
    parser = argparse.ArgumentParser(
        prog="spinup",
        parents=[common],
        description="Real, isolated databases, caches, queues, buckets and webhook receivers"
        " in one command. Anonymous resources expire; log in and claim them to keep them.",
        epilog="Environment: SPINUP_URL (the API), SPINUP_TOKEN (a Bearer token that wins over"
        " `spinup login`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for kind in KINDS.values():
        group = commands.add_parser(kind.path, help=f"create {kind.one}")
        actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        new = actions.add_parser(
            "new",
            parents=[common],
            help=f"create {kind.one}",
            description=f"Create {kind.one} and print how to connect.",
        )
        new.set_defaults(handler=cmd_new, kind=kind.path)
        new.add_argument(
            "--env", type=Path, metavar="FILE", help="write the settings into this .env file"
        )
        key_help = (
            f"prefix of the S3_* settings (default {kind.default_key})"
            if kind.path == "storage"
            else f"the variable to set (default {kind.default_key})"
        )
        new.add_argument("--key", metavar="VAR", help=key_help)
        new.add_argument(
            "--force", action="store_true", help="replace the key if FILE already sets it"
        )
        if kind.path == "db":
            new.add_argument(
                "--seed", type=Path, metavar="SQL", help="run this SQL file (with psql) against it"
            )
        else:
            new.set_defaults(seed=None)
        new.add_argument("--name", help="a name to recognise it by")
        new.add_argument("--json", action="store_true", help="print the API's JSON answer")

    ls = commands.add_parser("ls", parents=[common], help="list your account's resources")
    ls.add_argument("--kind", choices=list(KINDS), help="only this kind")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_ls)

    for name, handler, text in (
        ("show", cmd_show, "show a resource: status, limits, usage, credentials"),
        ("rm", cmd_rm, "delete a resource now"),
        ("rotate", cmd_rotate, "issue new credentials (the old ones stop working)"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument(
            "resource", metavar="TOKEN_OR_ID", help="its token, or its id when logged in"
        )
        if name != "rm":
            sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=handler)

    logs = commands.add_parser(
        "logs", parents=[common], help="a stack's logs, or the requests a webhook captured"
    )
    logs.add_argument("token", help="the stack's or the webhook's token")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")

    deploy = commands.add_parser(
        "deploy",
        parents=[common],
        help="deploy a directory with a spinup.yaml (a stack)",
        description="Upload the directory's spinup.yaml and one build context per service"
        " (the file its `build:` names, or else the directory named like it without .tar, or"
        " like the service), wait until it runs and print its URLs.",
    )
    deploy.add_argument("directory", type=Path, help="the app's directory")
    deploy.add_argument("--no-wait", action="store_true", help="answer as soon as it is accepted")
    deploy.add_argument("--json", action="store_true", help="print the API's JSON answer")
    deploy.set_defaults(handler=cmd_deploy)
    logs.set_defaults(handler=cmd_logs)

    claim = commands.add_parser(
        "claim", parents=[common], help="move anonymous resources into your account"
    )
    claim.add_argument(
        "claim", metavar="CLAIM_URL", help="a create response's claim_url (or its token)"
    )
    claim.add_argument("--json", action="store_true", help="print JSON")
    claim.set_defaults(handler=cmd_claim)

    login = commands.add_parser("login", parents=[common], help="log in and keep the session")
    login.add_argument("--email", help="asked for when missing")
    login.add_argument("--password", help="asked for (hidden) when missing")
    login.add_argument("--register", action="store_true", help="create the account first")
    login.set_defaults(handler=cmd_login)

    logout = commands.add_parser("logout", parents=[common], help="end the stored session")
    logout.set_defaults(handler=cmd_logout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``spinup`` command; the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exited:  # --help (0) or a usage error (2)
        return exited.code if isinstance(exited.code, int) else EXIT_USAGE
    url = (getattr(args, "url", None) or os.environ.get("SPINUP_URL") or DEFAULT_URL).rstrip("/")
    handler: Command = args.handler
    try:
        session = stored_session(url)
        token = os.environ.get("SPINUP_TOKEN") or (session["token"] if session else None)
        with SpinupClient(url, token) as client:
            return handler(client, args)
    except CliError as failure:
        say(failure, err=True)
        return failure.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
