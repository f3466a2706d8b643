"""Restore an export into a fresh resource with the field's own client, as a user would.

One function per kind, each following docs/export-formats.md; the driver-level tests
(tests/integration/test_export_drivers.py) and the HTTP round trips (tests/e2e/test_export.py)
both use them, so the formats are proven restorable by the tools the document names.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from typing import TYPE_CHECKING, Any

from bson import json_util

if TYPE_CHECKING:
    from miniopy_async.api import Minio
    from nats.aio.client import Client as NatsClient
    from pymongo.asynchronous.database import AsyncDatabase
    from redis.asyncio import Redis

#: The tar member of an S3 export that carries each object's content type and user metadata.
S3_METADATA_MEMBER = ".spinup-metadata.jsonl"


def json_lines(export: bytes) -> list[dict[str, Any]]:
    """The objects of a JSON-lines export, in order."""
    return [json.loads(line) for line in export.splitlines() if line.strip()]


def tar_members(export: bytes) -> dict[str, bytes]:
    """Every regular member of a tar export, by name, read with the standard library."""
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(export), mode="r:") as archive:
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    return members


async def restore_redis(export: bytes, client: Redis, key_prefix: str) -> int:
    """Write every key of a ``jsonl`` Redis export under ``key_prefix``; return the key count.

    Uses only commands a tenant may run (SET, HSET, RPUSH, SADD, ZADD, XADD, PEXPIRE).
    """
    prefix = key_prefix.encode()
    count = 0
    for record in json_lines(export):
        key = prefix + base64.b64decode(record["key"])
        kind, value = record["type"], record["value"]
        raw = base64.b64decode
        if kind == "string":
            await client.set(key, raw(value))
        elif kind == "hash":
            await client.hset(key, mapping={raw(f): raw(v) for f, v in value})
        elif kind == "list":
            await client.rpush(key, *[raw(item) for item in value])
        elif kind == "set":
            await client.sadd(key, *[raw(item) for item in value])
        elif kind == "zset":
            await client.zadd(key, {raw(member): score for member, score in value})
        elif kind == "stream":
            for entry_id, fields in value:
                await client.xadd(key, {raw(f): raw(v) for f, v in fields}, id=entry_id)
        else:
            msg = f"unknown Redis type {kind!r} in the export"
            raise ValueError(msg)
        if record["ttl_ms"] is not None:
            await client.pexpire(key, record["ttl_ms"])
        count += 1
    return count


async def restore_mongo(export: bytes, database: AsyncDatabase[Any]) -> dict[str, int]:
    """Insert every collection of a Mongo ``tar`` export and create its indexes.

    What ``mongoimport --db <db> --collection <c> --file <c>.json`` does, plus the indexes of
    ``<c>.indexes.json`` (``createIndexes`` with each line's spec). Returns documents per
    collection.
    """
    members = tar_members(export)
    counts: dict[str, int] = {}
    for name, body in members.items():
        if not name.endswith(".json") or name.endswith(".indexes.json"):
            continue
        collection = name.removesuffix(".json")
        documents = [json_util.loads(line) for line in body.splitlines() if line.strip()]
        if documents:
            await database[collection].insert_many(documents)
        counts[collection] = len(documents)
        indexes = members.get(f"{collection}.indexes.json", b"")
        for line in indexes.splitlines():
            spec = json_util.loads(line)
            spec.pop("v", None)
            spec.pop("ns", None)
            await database.command({"createIndexes": collection, "indexes": [spec]})
    return counts


async def restore_s3(export: bytes, client: Minio, bucket: str) -> int:
    """Upload every object of an S3 ``tar`` export with its content type and user metadata.

    What ``tar -x`` then ``aws s3 cp`` per object with ``--content-type``/``--metadata`` does.
    Returns the number of objects.
    """
    members = tar_members(export)
    described = {line["key"]: line for line in json_lines(members.pop(S3_METADATA_MEMBER, b""))}
    for key, body in members.items():
        about = described.get(key, {})
        await client.put_object(
            bucket,
            key,
            io.BytesIO(body),
            len(body),
            content_type=about.get("content_type") or "application/octet-stream",
            metadata=about.get("metadata") or None,
        )
    return len(members)


async def restore_nats(export: bytes, client: NatsClient) -> dict[str, int]:
    """Create every stream of a NATS ``jsonl`` export and publish its messages again, in order.

    Streams are created from their exported config (``$JS.API.STREAM.CREATE``, what ``nats
    stream add --config`` sends), the server's own fields left out; each message is published to
    its subject with its headers and waits for JetStream's ack (no ``stream=``: nats-py would add
    a ``Nats-Expected-Stream`` header to every message). Returns messages per stream.
    """
    js = client.jetstream()
    counts: dict[str, int] = {}
    for record in json_lines(export):
        if "config" in record:
            config = {k: v for k, v in record["config"].items() if k not in {"metadata", "created"}}
            reply = await client.request(
                f"$JS.API.STREAM.CREATE.{config['name']}", json.dumps(config).encode(), timeout=5
            )
            answer = json.loads(reply.data)
            if "error" in answer:
                msg = f"stream {config['name']} was not created: {answer['error']}"
                raise RuntimeError(msg)
            counts[config["name"]] = 0
            continue
        await js.publish(
            record["subject"],
            base64.b64decode(record["data"]),
            headers=record["headers"],
        )
        counts[record["stream"]] += 1
    return counts
