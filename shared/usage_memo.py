"""Which tenants a usage sweep must measure again, from cheap figures of their backend (ADR 0057).

Measuring a tenant exactly (listing a bucket, walking a database's files) costs the same whether
or not it changed, once a minute, for every tenant. Most backends also keep counters that move
with every write: a SeaweedFS collection's file and delete counts, a Postgres database's tuple
counters. Read for all tenants at once, they say which tenants may have changed. A tenant whose
figures are the same as before its last measure keeps that measure.

Figures can lag the write (a heartbeat, a statistics flush) or miss one (a completed multipart
upload, a vacuum giving space back). So a tenant whose figures changed within ``settle_s`` (or
that this worker first saw then) is measured at every sweep, and every tenant is measured again
after ``relist_s`` however still it looked. Figures of None say nothing was ever written, in a
backend where the first write makes them at once (a bucket with no collection; a NATS account
the server has not loaded, ADR 0059): such a tenant stands from its first measure.
What stays: a tenant quiet for ``settle_s`` whose first write lags past a sweep is measured one
sweep late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: What a backend reports of a tenant that moves with every write; None: nothing written yet.
Figures = tuple[int, ...] | None

#: A tenant whose figures changed within this long is measured at every sweep.
USAGE_SETTLE_S = 600.0
#: However still its figures, a tenant is measured again after this long.
USAGE_RELIST_S = 3600.0


@dataclass(slots=True)
class _Measure:
    figures: Figures
    usage: int
    measured_at: float
    changed_at: float


class UsageMemo:
    """What this worker's last measure of each tenant found, and whether it still stands.

    Per replica and in memory: a replica that never measured a tenant (or restarted) measures
    it, and counts it as changed then. Figures that match are enough whoever measured the tenant
    since, as they move with every write.
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
        self._measures: dict[str, _Measure] = {}
        self._pruned_at = clock()

    def standing(self, name: str, figures: Figures) -> int | None:
        """The usage last measured if ``figures`` say nothing changed since; None: measure it."""
        last = self._measures.get(name)
        if last is None or last.figures != figures:
            return None
        now = self._clock()
        if now - last.measured_at >= self._relist_s:
            return None
        if figures is not None and now - last.changed_at < self._settle_s:
            return None
        return last.usage

    def measured(self, name: str, figures: Figures, usage: int) -> None:
        """Record a measure, with the figures read before it began."""
        now = self._clock()
        before = self._measures.get(name)
        changed_at = now if before is None or before.figures != figures else before.changed_at
        self._measures[name] = _Measure(figures, usage, measured_at=now, changed_at=changed_at)
        if now - self._pruned_at >= self._relist_s:
            # A measure this old is taken again anyway: dropping it forgets deleted tenants.
            self._measures = {
                kept: last
                for kept, last in self._measures.items()
                if now - last.measured_at < self._relist_s
            }
            self._pruned_at = now

    def __len__(self) -> int:
        """How many tenants' measures are kept."""
        return len(self._measures)

    def forget(self, name: str) -> None:
        """Drop what is known of a tenant (deleted, or found missing)."""
        self._measures.pop(name, None)
