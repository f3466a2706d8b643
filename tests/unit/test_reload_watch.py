"""ReloadWatch's bookkeeping: which changes a reload may have undone, and how one is put back.

The gateway here is a dictionary of identities and the clock is set by hand, so each case says
exactly when the reload landed; ``tests/integration/test_storage_reloads.py`` has SeaweedFS's.
"""

from __future__ import annotations

import pytest

from storage_provisioner.reloads import CANARY_BUCKET, IdentityChange, ReloadWatch
from storage_provisioner.seaweed_pb import iam_pb2

CANARY = ("spinup-reload-canary-test", ("CANARYKEY", "canary-secret"))


def identity(user: str, *keys: str) -> iam_pb2.Identity:
    return iam_pb2.Identity(
        name=user,
        credentials=[iam_pb2.Credential(access_key=k, secret_key=f"{k}-secret") for k in keys],
    )


class Gateway:
    """Identities by name, as the S3 gateway holds them; ``reload`` drops what was never stored."""

    def __init__(self) -> None:
        self.held: dict[str, iam_pb2.Identity] = {}
        self.puts: list[str] = []

    async def put(self, held: iam_pb2.Identity) -> None:
        self.held[held.name] = held
        self.puts.append(held.name)

    async def remove(self, user: str) -> None:
        self.held.pop(user, None)

    def reload(self, stored: dict[str, iam_pb2.Identity]) -> None:
        self.held = dict(stored)

    async def key_known(self, bucket: str, access_key: str, secret_key: str) -> bool:
        del bucket
        return any(
            (c.access_key, c.secret_key) == (access_key, secret_key)
            for held in self.held.values()
            for c in held.credentials
        )


class Store:
    def __init__(self) -> None:
        self.stored: dict[str, iam_pb2.Identity] = {}

    async def identity(self, user: str) -> iam_pb2.Identity | None:
        return self.stored.get(user)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts() -> tuple[Gateway, Store, Clock, ReloadWatch]:
    gateway, store, clock = Gateway(), Store(), Clock()
    watch = ReloadWatch(
        store=store, gateway=gateway, key_known=gateway.key_known, canary=CANARY, clock=clock
    )
    return gateway, store, clock, watch


def rotated(user: str, old: str, new: str) -> IdentityChange:
    return IdentityChange(
        bucket=f"b-{user}",
        user=user,
        valid=((new, f"{new}-secret"),),
        revoked=((old, f"{old}-secret"),),
    )


async def test_a_rotate_a_reload_undid_is_put_back_from_the_store(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    gateway, store, clock, watch = parts
    await watch.check()  # plants the canary
    assert await gateway.key_known(CANARY_BUCKET, *CANARY[1])
    clock.now = 1.0
    assert await watch.check() == 0
    store.stored["u"] = identity("u", "NEW")
    gateway.held["u"] = identity("u", "NEW")
    clock.now = 2.0
    watch.note(rotated("u", "OLD", "NEW"))
    # The reload read "u" before the rotate and lands after it.
    gateway.reload({"u": identity("u", "OLD")})
    clock.now = 3.0
    assert await watch.check() == 1
    assert watch.reloads_found == 1
    assert gateway.held["u"] == identity("u", "NEW")
    assert await gateway.key_known(CANARY_BUCKET, *CANARY[1]), "the canary is planted again"


async def test_a_reload_that_undid_nothing_puts_nothing(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    gateway, store, clock, watch = parts
    await watch.check()
    store.stored["u"] = gateway.held["u"] = identity("u", "NEW")
    watch.note(rotated("u", "OLD", "NEW"))
    gateway.reload(store.stored)
    clock.now = 1.0
    assert await watch.check() == 0
    assert gateway.puts == [CANARY[0], CANARY[0]]


async def test_a_removed_identity_a_reload_brought_back_is_removed_again(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    gateway, _, clock, watch = parts
    await watch.check()
    watch.note(IdentityChange("b-u", "u", valid=(), revoked=(("OLD", "OLD-secret"),)))
    gateway.reload({"u": identity("u", "OLD")})
    clock.now = 1.0
    assert await watch.check() == 1
    assert "u" not in gateway.held


async def test_changes_from_before_the_previous_reload_are_not_checked_again(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    """A reload begins after the one before it landed, so it cannot undo what came earlier."""
    gateway, store, clock, watch = parts
    await watch.check()
    store.stored["early"] = gateway.held["early"] = identity("early", "NEW")
    watch.note(rotated("early", "OLD", "NEW"))
    clock.now = 1.0
    assert await watch.check() == 0  # the canary stands at 1.0
    gateway.reload(store.stored)  # first reload, between 1.0 and 2.0
    clock.now = 2.0
    await watch.check()
    # A (wrong) second reload that brings "early"'s old key back: "early" was noted before the
    # last probe that found the canary ahead of the first reload, so it is no longer checked.
    gateway.reload({"early": identity("early", "OLD")})
    clock.now = 3.0
    assert await watch.check() == 0
    assert gateway.held["early"] == identity("early", "OLD")


async def test_only_the_latest_change_of_an_identity_is_checked(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    """A rotate twice over: the first rotate's key is not put back."""
    gateway, store, clock, watch = parts
    await watch.check()
    watch.note(rotated("u", "K0", "K1"))
    watch.note(rotated("u", "K1", "K2"))
    store.stored["u"] = identity("u", "K2")
    gateway.reload({"u": identity("u", "K1")})
    clock.now = 1.0
    assert await watch.check() == 1
    assert gateway.held["u"] == identity("u", "K2")


async def test_a_copy_is_read_again_until_the_store_holds_still(
    parts: tuple[Gateway, Store, Clock, ReloadWatch],
) -> None:
    """The store changed while the copy was made: the newer identity is copied last."""
    gateway, store, clock, watch = parts
    await watch.check()
    versions = iter([identity("u", "K1"), identity("u", "K2"), identity("u", "K2")])

    async def changing(user: str) -> iam_pb2.Identity | None:
        del user
        return next(versions)

    store.identity = changing  # type: ignore[method-assign]
    watch.note(rotated("u", "K0", "K1"))
    gateway.reload({"u": identity("u", "K0")})
    clock.now = 1.0
    assert await watch.check() == 1
    assert gateway.held["u"] == identity("u", "K2")
