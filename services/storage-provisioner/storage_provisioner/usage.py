"""Which buckets a usage sweep must list, from the master's figures of every collection (ADR 0057).

Listing a bucket (``ListObjectsV2``, summing the sizes) is the exact measure, and it cost the
S3 gateway and this worker about 0.85 ms of CPU per bucket per sweep, once a minute, whether or
not the bucket had changed: at 1,600 buckets the largest idle cost of the stack. SeaweedFS's
master knows each collection's file, delete and byte counts (one ``CollectionStatistics`` call
for all of them; a bucket's collection has its name), and every upload, overwrite or delete
changes them. So a bucket whose figures are the same as before its last listing is not listed
again; its last figure stands.

The counts come from the volume servers' heartbeats (every 5 s), and completing a multipart
upload writes no data of its own, so a change does not always show at once. A bucket whose
figures changed within ``settle_s`` (or that this worker first saw then) is therefore listed at
every sweep, and every bucket is listed again after ``relist_s`` however still it looked. A
bucket with no collection was never written to: its first write makes one at once, so it stands
from its first listing. What stays: a bucket quiet for
``settle_s`` whose first write lands in the last heartbeat before a sweep is measured one sweep
late. SeaweedFS's own quota pass counts stored bytes a heartbeat late and needs none of this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from storage_provisioner.seaweed_pb import master_pb2

#: What the master reports of a collection that changes with every write and delete.
Figures = tuple[int, int, int, int, int]

#: A bucket whose figures changed within this long is listed at every sweep.
USAGE_SETTLE_S = 600.0
#: However still its figures, a bucket is listed again after this long.
USAGE_RELIST_S = 3600.0


def figures_by_collection(answer: master_pb2.CollectionStatisticsResponse) -> dict[str, Figures]:
    """Each collection's figures from the master's ``CollectionStatistics`` answer.

    A collection with no volume yet (a bucket nothing was ever written to) is not in it.
    """
    return {
        stats.collection: (
            stats.file_count,
            stats.delete_count,
            stats.deleted_byte_count,
            stats.size,
            stats.volume_count,
        )
        for stats in answer.collections
    }


@dataclass(slots=True)
class _Listing:
    figures: Figures | None
    usage: int
    listed_at: float
    changed_at: float


class ListedUsage:
    """What this worker's last listing of each bucket found, and whether it still stands.

    Per replica and in memory: a replica that never listed a bucket (or restarted) lists it,
    and counts it as changed then. Figures that match are enough whoever listed the bucket
    since, as they change with every write.
    """

    def __init__(
        self,
        *,
        settle_s: float = USAGE_SETTLE_S,
        relist_s: float = USAGE_RELIST_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settle_s = settle_s
        self._relist_s = relist_s
        self._clock = clock
        self._listings: dict[str, _Listing] = {}
        self._pruned_at = clock()

    def standing(self, bucket: str, figures: Figures | None) -> int | None:
        """The usage last listed if ``figures`` say nothing changed since; None: list it."""
        listing = self._listings.get(bucket)
        if listing is None or listing.figures != figures:
            return None
        now = self._clock()
        if now - listing.listed_at >= self._relist_s:
            return None
        # No collection: nothing was ever written, and the first write makes one at once (the
        # master creates its volume). Only buckets with data can have a change still to show.
        if figures is not None and now - listing.changed_at < self._settle_s:
            return None
        return listing.usage

    def listed(self, bucket: str, figures: Figures | None, usage: int) -> None:
        """Record a listing, with the figures read before it began."""
        now = self._clock()
        before = self._listings.get(bucket)
        changed_at = now if before is None or before.figures != figures else before.changed_at
        self._listings[bucket] = _Listing(figures, usage, listed_at=now, changed_at=changed_at)
        if now - self._pruned_at >= self._relist_s:
            # A listing this old is listed again anyway: dropping it forgets deleted buckets.
            self._listings = {
                name: kept
                for name, kept in self._listings.items()
                if now - kept.listed_at < self._relist_s
            }
            self._pruned_at = now

    def __len__(self) -> int:
        """How many buckets' listings are kept."""
        return len(self._listings)

    def forget(self, bucket: str) -> None:
        """Drop what is known of a bucket (deleted, or gone when listed)."""
        self._listings.pop(bucket, None)
