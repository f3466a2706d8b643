"""The ``spinup`` commands: every API action, from ``db new`` to ``tokens rm``.

Create, deploy, list, show, delete, rotate, logs, claim, login; stack control (stop, start,
restart, redeploy), access tokens, whoami, plans.

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
    find_record,
    forget_resource,
    forget_session,
    recorded_resources,
    records_path,
    remember_resource,
    spinner,
    store_session,
    stored_session,
)
from spinup_cli.dotenv import (
    KeyExistsError,
    assigned_key,
    block_ids,
    block_keys,
    remove_block,
    replace_values,
    write_block,
    write_private,
)
from spinup_cli.webhook import add_webhook_commands


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
        # For storage --key names the bucket's setting: S3 -> S3_BUCKET (and the AWS_* names).
        Kind("storage", "s3", "S3 bucket", "S3", article="an"),
        Kind("webhook", "webhook", "webhook receiver", "WEBHOOK_URL"),
    )
}

KINDS_BY_API_KIND = {kind.api_kind: kind for kind in KINDS.values()}

# The names boto3 and the other AWS SDKs read by themselves (AWS_ENDPOINT_URL_S3: botocore 1.31+,
# AWS SDK for JS v3, Go v2, Java 2.x...), from the storage credentials; the bucket has no
# standard name. AWS_DEFAULT_REGION too: boto3 reads only that one.
S3_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "access_key",
    "AWS_SECRET_ACCESS_KEY": "secret_key",
    "AWS_ENDPOINT_URL_S3": "endpoint",
    "AWS_REGION": "region",
    "AWS_DEFAULT_REGION": "region",
}
# With --key other than S3, one .env holds several buckets: every setting carries the prefix.
S3_PREFIXED = {
    "ACCESS_KEY_ID": "access_key",
    "SECRET_ACCESS_KEY": "secret_key",
    "ENDPOINT_URL": "endpoint",
    "REGION": "region",
}
S3_FIELDS = ("endpoint", "region", "bucket", "access_key", "secret_key")


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


def creds_file_name(resource_id: str) -> str:
    """The file beside the ``.env`` holding a queue's ``.creds`` text."""
    return f"spinup-queue-{resource_id[:8]}.creds"


def creds_key(key: str) -> str:
    """The setting holding a queue's ``.creds`` path: ``NATS_URL`` → ``NATS_CREDS``."""
    return f"{key.removesuffix('_URL')}_CREDS"


def prefix_key(key: str) -> str:
    """The setting holding a cache's key prefix: ``REDIS_URL`` → ``REDIS_KEY_PREFIX``."""
    return f"{key.removesuffix('_URL')}_KEY_PREFIX"


def s3_names(key: str) -> dict[str, str]:
    """Setting name → credentials field of a bucket written under ``--key``."""
    if key == KINDS["storage"].default_key:
        return {**S3_SETTINGS, f"{key}_BUCKET": "bucket"}
    return {f"{key}_{name}": field for name, field in {**S3_PREFIXED, "BUCKET": "bucket"}.items()}


def env_keys(kind: Kind, key: str) -> set[str]:
    """Every setting ``env_values`` may write for this kind under ``--key``."""
    if kind.path == "storage":
        return set(s3_names(key))
    if kind.path == "queue":
        return {key, creds_key(key)}
    if kind.path == "cache":
        return {key, prefix_key(key)}
    return {key}


def env_values(kind: Kind, key: str, created: dict[str, Any], env_file: Path) -> dict[str, str]:
    """The ``.env`` settings of a new resource.

    A queue's ``.creds`` text is several lines, which ``.env`` readers disagree about, so it is
    written to a file beside the ``.env`` (mode 0600) and ``<KEY>_CREDS`` holds that file's path.
    """
    credentials: dict[str, Any] = created.get("credentials") or {}
    if kind.path == "storage":
        return {
            name: str(credentials[field])
            for name, field in s3_names(key).items()
            if credentials.get(field) is not None
        }
    values = {key: connect_url(created)}
    if kind.path == "cache" and credentials.get("key_prefix"):
        # Every key the app uses must start with it: the cache refuses all others.
        values[prefix_key(key)] = str(credentials["key_prefix"])
    if kind.path == "queue" and credentials.get("creds"):
        # An absolute path: the app reading the .env may run from another directory.
        creds_file = env_file.parent.resolve() / creds_file_name(str(created["id"]))
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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def ttl_seconds(text: str) -> int:
    """``--ttl``: ``90``, ``90s``, ``30m``, ``2h`` or ``1d``, as seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    if not number.isdigit() or int(number) == 0:
        msg = f"{text!r} is not a duration such as 30m, 2h or 1d"
        raise argparse.ArgumentTypeError(msg)
    return int(number) * _DURATION_UNITS[unit]


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
    replaced = (
        block_ids(env_file, env_keys(kind, key)) if env_file is not None and args.force else []
    )

    asked = {"name": args.name, "ttl_seconds": args.ttl}
    body = {field: value for field, value in asked.items() if value is not None} or None
    created = client.request(
        "POST", f"/{kind.path}/new", json_body=body, slow=f"creating {kind.one}"
    )
    # Recorded before anything else can fail: the token is the only key to the resource.
    record = _record_of(created, kind)
    remember_resource(client.url, record)

    if env_file is not None:
        values = env_values(kind, key, created, env_file)
        try:
            write_block(env_file, env_comments(kind, created), values, force=args.force)
        except KeyExistsError as taken:
            msg = f"{taken}; use --force to replace."
            raise CliError(msg) from None
        record["env"] = [{"file": str(env_file.resolve()), "key": key}]
        remember_resource(client.url, record)
        _tell_replaced(client, env_file, replaced)
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


def _record_of(created: dict[str, Any], kind: Kind) -> dict[str, Any]:
    """What the local record keeps of a new resource (its token above all)."""
    return {
        "id": str(created["id"]),
        "kind": kind.api_kind,
        "name": created.get("name"),
        "token": created["token"],
        "tier": created.get("tier"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "expires_at": created.get("expires_at"),
        "env": [],
    }


def _tell_replaced(client: SpinupClient, env_file: Path, replaced: list[str]) -> None:
    """After ``--force``: the resources whose settings were replaced still exist; say so.

    They are not deleted (their data may matter) and their tokens are not lost: the local record
    keeps them, and this names the command that deletes each.
    """
    for old_id in replaced:
        old = find_record(client.url, old_id)
        if old is None:
            say(
                f"Replaced the settings of resource {old_id} in {env_file}; it still exists."
                " It was not made from this machine: delete it with its token or id.",
                err=True,
            )
            continue
        old["env"] = [e for e in old.get("env", []) if e.get("file") != str(env_file.resolve())]
        remember_resource(client.url, old)
        say(
            f"Replaced the settings of {old['kind']} {old_id} in {env_file}. It still exists"
            f" (and counts against your caps): its token is kept in {records_path()}"
            f" (spinup ls). Delete it: spinup rm {old['token']}",
            err=True,
        )


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
        rows += [(field, credentials.get(field)) for field in S3_FIELDS]
    if kind.path == "cache":
        rows.append(("key_prefix", credentials.get("key_prefix")))
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
    """``spinup ls``: the account's resources.

    Without an account (or with ``--local``): what this machine made, from the local record.
    """
    if args.local or not client.token:
        return _ls_local(client, args)
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


def _ls_local(client: SpinupClient, args: argparse.Namespace) -> int:
    """The local record, each resource's status asked with its own token."""
    records = [
        r
        for r in recorded_resources(client.url)
        if not args.kind or r.get("kind") == KINDS[args.kind].api_kind
    ]
    for record in records:
        record["status"] = _status_of(client, str(record["token"]))
    if args.json:
        _print_json(records)
        return 0
    if not records:
        say(f"Nothing made from this machine at {client.url}. Create one: spinup db new")
        return 0
    say(f"Made from this machine (recorded in {records_path()}):")
    say(f"{'TOKEN':<48}  {'KIND':<8}  {'STATUS':<8}  {'NAME':<16}  EXPIRES")
    for item in records:
        name = item.get("name") or "-"
        say(
            f"{item['token']:<48}  {item['kind']:<8}  {item['status']:<8}  {name:<16}"
            f"  {_when(item.get('expires_at'))}"
        )
    return 0


def _status_of(client: SpinupClient, token: str) -> str:
    try:
        return str(client.request("GET", f"/resources/{token}").get("status", "?"))
    except CliError as refused:
        text = str(refused)
        if "resource_gone" in text:
            return "expired"
        return "deleted" if "not_found" in text else "unknown"


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
    """``spinup rm``: delete a resource now.

    Its settings leave the ``.env`` files holding them (those the local record knows, and
    ``--env``), so no file names credentials that no longer work.
    """
    gone = client.request("DELETE", f"/resources/{args.resource}", slow="deleting")
    resource_id = str(gone["id"])
    say(f"Deleted {resource_id} (status {gone['status']}); its credentials no longer work.")
    record = forget_resource(client.url, resource_id)
    for env_file, _key in _env_targets(record, args.env):
        if removed := remove_block(env_file, resource_id):
            say(f"Removed {', '.join(removed)} from {env_file}")
            # A queue's .creds file beside it holds credentials that no longer work.
            creds_file = env_file.parent / creds_file_name(resource_id)
            if creds_file.exists():
                creds_file.unlink()
                say(f"Removed {creds_file}")
    return 0


def _env_targets(record: dict[str, Any] | None, extra: Path | None) -> list[tuple[Path, str]]:
    """The ``.env`` files (and the ``--key`` each was written with) to keep true.

    Those the local record knows, ``--env``, and ``./.env``: a block is changed only where its
    comment names the resource's id, so looking at one more file is harmless.
    """
    targets = [(Path(e["file"]), str(e.get("key", ""))) for e in (record or {}).get("env", [])]
    for candidate in (extra, Path(".env")):
        if candidate is not None and all(candidate.resolve() != path for path, _ in targets):
            targets.append((candidate.resolve(), ""))
    return targets


def _key_in_block(kind: Kind, keys: list[str]) -> str:
    """The ``--key`` a block was written with, from the keys it sets."""
    if kind.path == "storage":
        bucket = next((k for k in keys if k.endswith("_BUCKET")), None)
        return bucket.removesuffix("_BUCKET") if bucket else kind.default_key
    suffixed = ("_CREDS", "_KEY_PREFIX")
    return next((k for k in keys if not k.endswith(suffixed)), kind.default_key)


def cmd_rotate(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup rotate``: new credentials; the old ones stop working at once.

    The ``.env`` files holding the old ones (those the local record knows, and ``--env``) get
    the new ones.
    """
    issued = client.request("POST", f"/resources/{args.resource}/rotate", slow="rotating")
    resource_id = str(issued["id"])
    record = find_record(client.url, args.resource) or find_record(client.url, resource_id)
    kind = KINDS_BY_API_KIND.get(str(issued.get("kind")))
    updated: list[tuple[Path, list[str]]] = []
    if kind is not None:
        for env_file, recorded_key in _env_targets(record, args.env):
            keys = block_keys(env_file, resource_id)
            if not keys:  # this file does not hold it (and a queue's .creds is not written)
                continue
            key = recorded_key or _key_in_block(kind, keys)
            values = env_values(kind, key, issued, env_file)
            if changed := replace_values(env_file, resource_id, values):
                updated.append((env_file, changed))
    if args.json:
        _print_json(issued)
        return 0
    say(f"New credentials for {issued['kind']} {resource_id}; the old ones no longer work.")
    if issued.get("connection_url"):
        say(f"  connection_url: {issued['connection_url']}")
    say(f"  {issued.get('note', '')}")
    for env_file, changed in updated:
        say(f"Updated {', '.join(changed)} in {env_file}")
    return 0


def cmd_fork(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup fork``: a new database holding a copy of this one's data, credentials its own."""
    asked = {"name": args.name, "ttl_seconds": args.ttl}
    body = {field: value for field, value in asked.items() if value is not None} or None
    created = client.request(
        "POST", f"/resources/{args.resource}/fork", json_body=body, slow="copying the data"
    )
    kind = KINDS_BY_API_KIND[str(created["kind"])]
    # Recorded first, as for `new`: the token is the only key to the fork.
    remember_resource(client.url, _record_of(created, kind))
    if args.json:
        _print_json(created)
    else:
        _print_created(kind, created)
        say(f"  {'forked from:':<16}{created.get('forked_from')}")
    return 0


def cmd_export(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup export``: a complete copy of the resource's data, in a file its tools restore."""
    asked = {"format": args.format, "resource": args.backing}
    params = {name: value for name, value in asked.items() if value}
    where, size = client.download(f"/resources/{args.resource}/export", params, args.output)
    if where is not None:
        say(f"Exported {size} bytes to {where}.")
    return 0


def cmd_stack_action(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup stop|start|restart|redeploy``: control a stack; its data stays."""
    done = client.request(
        "POST", f"/stacks/{args.resource}/{args.command}", slow=f"{args.command} in progress"
    )
    if args.json:
        _print_json(done)
        return 0
    say(f"Stack {done['id']}: {done['status']} (revision {done.get('revision')}).")
    if done.get("status") == "building":
        say(f"  Follow it: spinup logs -f {args.resource}")
    return 0


def cmd_plans(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup plans``: every tier's lifetime and limits."""
    plans = client.request("GET", "/plans")
    if args.json:
        _print_json(plans)
        return 0
    for name, tier in plans["tiers"].items():
        anonymous = " (without an account)" if name == plans["anonymous_tier"] else ""
        ttl = tier.get("ttl_seconds")
        lifetime = f"live {round(ttl / HOUR_S)} h" if ttl else "are permanent"
        say(f"{name}{anonymous}: resources {lifetime}")
    say("All limits: spinup plans --json")
    return 0


def cmd_whoami(client: SpinupClient, _args: argparse.Namespace) -> int:
    """``spinup whoami``: the account the CLI acts for."""
    client.require_login("see your account")
    user = client.request("GET", "/auth/user")
    account = user.get("account", user)
    say(f"{account.get('email', '?')} (tier {account.get('tier', '?')}) at {client.url}")
    return 0


def cmd_tokens(client: SpinupClient, args: argparse.Namespace) -> int:
    """``spinup tokens ls|new|rm``: personal access tokens (for SPINUP_TOKEN, CI, agents)."""
    client.require_login("manage access tokens")
    if args.action == "new":
        body: dict[str, Any] = {"name": args.name, "scopes": args.scope or ["provision", "read"]}
        if args.expires_in_days:
            body["expires_in_days"] = args.expires_in_days
        issued = client.request("POST", "/auth/tokens", json_body=body)
        if args.json:
            _print_json(issued)
            return 0
        view = issued["access_token"]
        say(f"Access token {view['name']!r} (id {view['id']}, scopes {', '.join(view['scopes'])}):")
        say(f"  {issued['token']}")
        say("  Shown once: keep it, e.g. as SPINUP_TOKEN. Revoke it: spinup tokens rm ID")
        return 0
    if args.action == "rm":
        revoked = client.request("DELETE", f"/auth/tokens/{args.token_id}")
        say(f"Revoked access token {revoked['access_token']['id']}; it no longer works.")
        return 0
    tokens = client.request("GET", "/auth/tokens")["access_tokens"]
    if args.json:
        _print_json(tokens)
        return 0
    if not tokens:
        say("No access tokens. Make one: spinup tokens new --name ci")
    for token in tokens:
        state = (
            "revoked" if token.get("revoked_at") else f"expires {_when(token.get('expires_at'))}"
        )
        say(f"{token['id']}  {token['name']:<16}  {','.join(token['scopes']):<24}  {state}")
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


def _add_name_and_ttl(new: argparse.ArgumentParser) -> None:
    new.add_argument("--name", help="a name to recognise it by")
    new.add_argument(
        "--ttl",
        type=ttl_seconds,
        metavar="DURATION",
        help="how long it lives without an account, e.g. 30m, 2h, 1d (bounds: GET /plans)",
    )


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915  (one flat list of commands)
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
        key_help = {
            "storage": "S3 (default): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,"
            " AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_DEFAULT_REGION and S3_BUCKET; another VAR:"
            " VAR_ACCESS_KEY_ID, VAR_SECRET_ACCESS_KEY, VAR_ENDPOINT_URL, VAR_REGION, VAR_BUCKET",
            "cache": "the variable to set (default REDIS_URL; the key prefix goes in"
            " REDIS_KEY_PREFIX, after VAR without _URL)",
            "queue": "the variable to set (default NATS_URL; the .creds file's path goes in"
            " NATS_CREDS, after VAR without _URL)",
        }.get(kind.path, f"the variable to set (default {kind.default_key})")
        new.add_argument("--key", metavar="VAR", help=key_help)
        new.add_argument(
            "--force",
            action="store_true",
            help="replace the settings if FILE already sets them; the resource they named is"
            " kept (not deleted) and its token stays in the local record: spinup ls",
        )
        if kind.path == "db":
            new.add_argument(
                "--seed", type=Path, metavar="SQL", help="run this SQL file (with psql) against it"
            )
        else:
            new.set_defaults(seed=None)
        _add_name_and_ttl(new)
        new.add_argument("--json", action="store_true", help="print the API's JSON answer")
        if kind.path == "webhook":
            add_webhook_commands(actions, common)

    _add_ls(commands, common)

    for name, handler, text in (
        ("show", cmd_show, "show a resource: status, limits, usage, credentials"),
        ("rm", cmd_rm, "delete a resource now, and its settings from .env"),
        ("rotate", cmd_rotate, "issue new credentials (the old ones stop working); .env follows"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.add_argument(
            "resource", metavar="TOKEN_OR_ID", help="its token, or its id when logged in"
        )
        if name != "show":
            sub.add_argument(
                "--env",
                type=Path,
                metavar="FILE",
                help="also keep this .env file true (the files `new --env` wrote are known)",
            )
        if name != "rm":
            sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=handler)

    _add_fork(commands, common)
    _add_export(commands, common)
    _add_stack_and_account_commands(commands, common)

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


def _add_fork(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    fork_text = "a new database with a copy of this one's data and its own credentials"
    fork = commands.add_parser("fork", parents=[common], help=fork_text, description=fork_text)
    fork.add_argument("resource", metavar="TOKEN_OR_ID", help="its token, or its id when logged in")
    _add_name_and_ttl(fork)
    fork.add_argument("--json", action="store_true", help="print the API's JSON answer")
    fork.set_defaults(handler=cmd_fork)


def _add_export(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    text = (
        "download a copy of the resource's data (also after expiry, during the plan's grace):"
        " Postgres custom or sql, Redis/NATS/webhook jsonl, MongoDB/S3 tar"
    )
    export = commands.add_parser("export", parents=[common], help=text, description=text)
    export.add_argument(
        "resource", metavar="TOKEN_OR_ID", help="its token, or its id when logged in"
    )
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write it (- for stdout; default: the server's file name, here)",
    )
    export.add_argument("--format", metavar="F", help="the kind's format (default: its first)")
    export.add_argument(
        "--resource",
        dest="backing",
        metavar="NAME",
        help="a stack's backing resource to export (its name in the manifest, e.g. db)",
    )
    export.set_defaults(handler=cmd_export)


def _add_ls(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """``spinup ls``: the account's list, or the local record of what this machine made."""
    ls = commands.add_parser(
        "ls",
        parents=[common],
        help="list your account's resources (without an account: what this machine made)",
    )
    ls.add_argument("--kind", choices=list(KINDS), help="only this kind")
    ls.add_argument(
        "--local", action="store_true", help="list what this machine made, even when logged in"
    )
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_ls)


def _add_stack_and_account_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Stack control, plans, whoami and access tokens: one command per API action."""
    for action, text in (
        ("stop", "stop a stack's containers (data kept)"),
        ("start", "start a stopped stack"),
        ("restart", "stop, then start a stack"),
        ("redeploy", "build and run a stack again from its stored upload"),
    ):
        sub = commands.add_parser(action, parents=[common], help=text, description=text)
        sub.add_argument("resource", metavar="TOKEN_OR_ID", help="the stack's token, or its id")
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=cmd_stack_action)

    plans = commands.add_parser("plans", parents=[common], help="tiers, lifetimes and limits")
    plans.add_argument("--json", action="store_true", help="print the API's JSON answer")
    plans.set_defaults(handler=cmd_plans)

    whoami = commands.add_parser("whoami", parents=[common], help="the account you act for")
    whoami.set_defaults(handler=cmd_whoami)

    tokens = commands.add_parser(
        "tokens", help="personal access tokens (for SPINUP_TOKEN, CI and agents)"
    )
    token_actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    tokens_ls = token_actions.add_parser("ls", parents=[common], help="list them")
    tokens_ls.add_argument("--json", action="store_true", help="print JSON")
    tokens_new = token_actions.add_parser("new", parents=[common], help="make one (shown once)")
    tokens_new.add_argument("--name", required=True, help="a name to recognise it by")
    tokens_new.add_argument(
        "--scope",
        action="append",
        choices=["provision", "read", "delete"],
        help="what it may do; repeat it (default: provision and read)",
    )
    tokens_new.add_argument("--expires-in-days", type=int, metavar="N", help="default: never")
    tokens_new.add_argument("--json", action="store_true", help="print JSON")
    tokens_rm = token_actions.add_parser("rm", parents=[common], help="revoke one")
    tokens_rm.add_argument("token_id", metavar="ID", help="its id (spinup tokens ls)")
    for sub in (tokens_ls, tokens_new, tokens_rm):
        sub.set_defaults(handler=cmd_tokens)


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
