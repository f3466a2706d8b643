"""A stack's upload in the JetStream object store, stored, replaced and removed by name.

An upload is ``<stack id>/spinup.yaml`` and one ``<stack id>/<file>`` object per build context.
The manifest is stored last and names every file (``check_manifest`` refuses an unused one), so
the manifest says which objects a stack has: nothing here lists the store, which holds every
stack's files, to find them.

An object is removed whole: its chunks, then its metadata. nats-py's ``ObjectStore.delete``
keeps a metadata tombstone per name for ever, and a listing reads every tombstone again: with
deletes by listing, each stack's teardown cost more than the one before it (0.7 s at 20,000
stacks deleted, bench/README.md "What a stack's delete left in JetStream").
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
)

from shared.contracts.stacks import MANIFEST_NAME, ManifestError, parse_manifest
from shared.contracts.subjects import STACK_UPLOADS_BUCKET

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from uuid import UUID

    from nats.js.client import JetStreamContext
    from nats.js.object_store import ObjectStore

_STREAM = OBJ_STREAM_TEMPLATE.format(bucket=STACK_UPLOADS_BUCKET)


def _object_name(stack_id: UUID, name: str) -> str:
    return f"{stack_id}/{name}"


def meta_subject(name: str) -> str:
    """Where the store keeps an object's metadata (nats-py's layout: its base64url name)."""
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    return OBJ_META_PRE_TEMPLATE.format(bucket=STACK_UPLOADS_BUCKET, obj=encoded)


def chunks_subject(nuid: str) -> str:
    """Where the store keeps an object's chunks (named by the object's nuid)."""
    return OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=STACK_UPLOADS_BUCKET, obj=nuid)


async def put_upload(
    js: JetStreamContext, stack_id: UUID, manifest_text: bytes, files: Mapping[str, bytes]
) -> None:
    """Store the stack's upload, over an earlier one (a redeploy, a retried create).

    The manifest goes last: whoever finds it finds every file it names. Files the earlier
    upload had and this one does not are removed afterwards.
    """
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    earlier = await _named_files(store, stack_id) or set()
    for name, data in files.items():
        await store.put(_object_name(stack_id, name), data)
    await store.put(_object_name(stack_id, MANIFEST_NAME), manifest_text)
    await _remove(js, store, stack_id, earlier - set(files) - {MANIFEST_NAME})


async def remove_upload(
    js: JetStreamContext, stack_id: UUID, files: Collection[str] | None = None
) -> None:
    """Remove the stack's upload: ``files``, or the ones its stored manifest names; idempotent.

    The manifest goes last, so a removal cut short is finished by the next one. Without a
    readable manifest the store is listed for the stack's objects (an upload stored by an
    earlier version whose manifest no longer parses); without any, there is nothing to remove.
    """
    store = await js.object_store(STACK_UPLOADS_BUCKET)
    named = set(files) if files is not None else await _named_files(store, stack_id)
    if named is None:
        named = await _listed_files(store, stack_id)
    await _remove(js, store, stack_id, [*sorted(named - {MANIFEST_NAME}), MANIFEST_NAME])


async def _named_files(store: ObjectStore, stack_id: UUID) -> set[str] | None:
    """The manifest and the files it builds; empty with no manifest, None if it is unreadable."""
    try:
        stored = await store.get(_object_name(stack_id, MANIFEST_NAME))
    except ObjectNotFoundError:
        return set()
    try:
        manifest = parse_manifest(bytes(stored.data or b""))
    except ManifestError:
        return None
    builds = {service.build for service in manifest.services.values() if service.build}
    return {MANIFEST_NAME, *builds}


async def _listed_files(store: ObjectStore, stack_id: UUID) -> set[str]:
    """The stack's objects, by reading the whole store's metadata (only when no manifest says)."""
    prefix = _object_name(stack_id, "")
    try:
        listed = await store.list(ignore_deletes=True)
    except NotFoundError:
        return set()
    return {
        info.name.removeprefix(prefix)
        for info in listed
        if info.name and info.name.startswith(prefix)
    }


async def _remove(
    js: JetStreamContext, store: ObjectStore, stack_id: UUID, files: Collection[str]
) -> None:
    """Purge each object's chunks, then its metadata: nothing of it stays in the stream."""
    for file in files:
        name = _object_name(stack_id, file)
        try:
            info = await store.get_info(name, show_deleted=True)
        except ObjectNotFoundError:
            continue
        if info.nuid:
            await js.purge_stream(_STREAM, subject=chunks_subject(info.nuid))
        await js.purge_stream(_STREAM, subject=meta_subject(name))
