"""Which tenants a usage sweep measures again (``shared.usage_memo``, ADR 0057)."""

from __future__ import annotations

from shared.usage_memo import Figures, UsageMemo
from storage_provisioner.driver import figures_by_collection
from storage_provisioner.seaweed_pb import master_pb2

QUIET: Figures = (3, 1, 100, 5_000, 1)
WRITTEN: Figures = (4, 1, 100, 6_000, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def memo(clock: Clock) -> UsageMemo:
    return UsageMemo(settle_s=600, relist_s=3_600, clock=clock)


def test_a_bucket_never_listed_is_listed() -> None:
    assert memo(Clock()).standing("t-a", QUIET) is None
    assert memo(Clock()).standing("t-a", None) is None


def test_a_bucket_is_listed_at_every_sweep_until_its_figures_have_held_still_long_enough() -> None:
    clock = Clock()
    listed = memo(clock)
    listed.measured("t-a", QUIET, 4_000)
    clock.now += (
        599  # a completed multipart upload, or a write not yet heartbeated, shows no change
    )
    assert listed.standing("t-a", QUIET) is None
    listed.measured("t-a", QUIET, 4_500)
    clock.now += 1  # still since the first listing: the figure stands
    assert listed.standing("t-a", QUIET) == 4_500


def test_figures_that_moved_make_a_listing_and_start_the_quiet_time_again() -> None:
    clock = Clock()
    listed = memo(clock)
    listed.measured("t-a", QUIET, 4_000)
    clock.now += 700
    assert listed.standing("t-a", QUIET) == 4_000
    assert listed.standing("t-a", WRITTEN) is None
    listed.measured("t-a", WRITTEN, 4_900)
    clock.now += 599
    assert listed.standing("t-a", WRITTEN) is None
    clock.now += 1
    assert listed.standing("t-a", WRITTEN) == 4_900


def test_a_bucket_never_written_to_stands_from_its_first_listing_until_it_has_a_collection() -> (
    None
):
    clock = Clock()
    listed = memo(clock)
    listed.measured("t-a", None, 0)
    assert listed.standing("t-a", None) == 0
    assert listed.standing("t-a", QUIET) is None
    clock.now += 3_600
    assert listed.standing("t-a", None) is None


def test_every_bucket_is_listed_again_after_the_relist_time() -> None:
    clock = Clock()
    listed = memo(clock)
    listed.measured("t-a", QUIET, 4_000)
    clock.now += 3_599
    assert listed.standing("t-a", QUIET) == 4_000
    clock.now += 1
    assert listed.standing("t-a", QUIET) is None


def test_forgotten_and_long_unlisted_buckets_are_dropped() -> None:
    clock = Clock()
    listed = memo(clock)
    listed.measured("t-deleted", QUIET, 1)
    listed.measured("t-deleted-by-another-replica", QUIET, 2)
    listed.forget("t-deleted")
    assert len(listed) == 1
    clock.now += 3_600  # the next listing drops what is this old: it would be listed anyway
    listed.measured("t-new", QUIET, 3)
    assert len(listed) == 1
    clock.now += 600
    assert listed.standing("t-new", QUIET) == 3


def test_the_masters_answer_gives_each_collections_figures() -> None:
    answer = master_pb2.CollectionStatisticsResponse(
        collections=[
            master_pb2.CollectionStatistics(
                collection="t-a",
                file_count=3,
                delete_count=1,
                deleted_byte_count=100,
                size=5_000,
                physical_size=10_000,
                volume_count=1,
            )
        ]
    )
    assert figures_by_collection(answer) == {"t-a": QUIET}
