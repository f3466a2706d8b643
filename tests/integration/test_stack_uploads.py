"""A stack's upload in the platform NATS's object store: stored, replaced and removed by name.

Removed means nothing of it stays in the store's stream: no chunk and no metadata tombstone,
which a later listing would read again (``shared.stacks.uploads``).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import OBJ_STREAM_TEMPLATE

from shared.bus import ensure_stack_stores
from shared.contracts.stacks import MANIFEST_NAME
from shared.contracts.subjects import STACK_UPLOADS_BUCKET
from shared.stacks.uploads import chunks_subject, meta_subject, put_upload, remove_upload

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.js.client import JetStreamContext

STREAM = OBJ_STREAM_TEMPLATE.format(bucket=STACK_UPLOADS_BUCKET)
TWO_BUILDS = b"services:\n  web: {build: web.tar, port: 8080}\n  worker: {build: worker.tar}\n"
ONE_BUILD = b"services:\n  web: {build: web.tar, port: 8080}\n"


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stack_stores(context)
    return context


async def in_stream(js: JetStreamContext, stack_id: uuid.UUID, file: str) -> list[str]:
    """The subjects of the store's stream that still hold something of the object."""
    meta = meta_subject(f"{stack_id}/{file}")
    try:
        last = await js.get_last_msg(STREAM, meta)
    except NotFoundError:
        return []
    chunks = chunks_subject(json.loads(last.data or b"{}")["nuid"])
    try:
        await js.get_last_msg(STREAM, chunks)
    except NotFoundError:
        return [meta]
    return [meta, chunks]


async def test_a_removed_upload_leaves_no_chunk_and_no_tombstone(js: JetStreamContext) -> None:
    stack_id = uuid.uuid4()
    files = {"web.tar": b"w" * 300_000, "worker.tar": b"k" * 10}
    await put_upload(js, stack_id, TWO_BUILDS, files)
    assert await in_stream(js, stack_id, "web.tar")  # stored: metadata and chunks

    await remove_upload(js, stack_id)

    for file in [MANIFEST_NAME, *files]:
        assert await in_stream(js, stack_id, file) == [], file
    await remove_upload(js, stack_id)  # again: nothing to do, no error


async def test_a_redeploy_removes_the_files_its_manifest_no_longer_names(
    js: JetStreamContext,
) -> None:
    stack_id = uuid.uuid4()
    await put_upload(js, stack_id, TWO_BUILDS, {"web.tar": b"one", "worker.tar": b"two"})

    await put_upload(js, stack_id, ONE_BUILD, {"web.tar": b"three"})

    store = await js.object_store(STACK_UPLOADS_BUCKET)
    assert (await store.get(f"{stack_id}/web.tar")).data == b"three"
    assert await in_stream(js, stack_id, "worker.tar") == []
    await remove_upload(js, stack_id)
    assert await in_stream(js, stack_id, "web.tar") == []


async def test_removing_one_stacks_upload_leaves_every_other_stacks(js: JetStreamContext) -> None:
    kept, removed = uuid.uuid4(), uuid.uuid4()
    for stack_id in (kept, removed):
        await put_upload(js, stack_id, ONE_BUILD, {"web.tar": stack_id.bytes})

    await remove_upload(js, removed)

    store = await js.object_store(STACK_UPLOADS_BUCKET)
    assert (await store.get(f"{kept}/web.tar")).data == kept.bytes
    assert (await store.get(f"{kept}/{MANIFEST_NAME}")).data == ONE_BUILD
    await remove_upload(js, kept)
    with pytest.raises(ObjectNotFoundError):
        await store.get(f"{kept}/web.tar")


async def test_an_upload_whose_manifest_no_longer_parses_is_still_removed(
    js: JetStreamContext,
) -> None:
    """A manifest an earlier version accepted: the stack's objects are found by listing."""
    stack_id = uuid.uuid4()
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    await store.put(f"{stack_id}/web.tar", b"context")
    await store.put(f"{stack_id}/{MANIFEST_NAME}", b"services: [not, a, mapping]\n")

    await remove_upload(js, stack_id)

    assert await in_stream(js, stack_id, "web.tar") == []
    assert await in_stream(js, stack_id, MANIFEST_NAME) == []
