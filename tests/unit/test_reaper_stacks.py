"""A stack's deploy as its ``resources`` row holds it: what tells a deploy whose worker died."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.contracts.events import (
    QuotaExceeded,
    ResourceProvisioned,
    StackDeployStarted,
    StackReady,
)
from shared.stacks.state import DeployProgress, StackStatus

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_deploy_moves_with_its_progress_events_only() -> None:
    stack_id = uuid.uuid4()
    deploy = DeployProgress()
    deploy.apply(ResourceProvisioned(resource_id=stack_id, credentials_sealed="x"), START)
    assert (deploy.view.status, deploy.moved_at) == (StackStatus.PENDING, START)

    started = START + timedelta(seconds=5)
    deploy.apply(StackDeployStarted(resource_id=stack_id, revision=1, services=["web"]), started)
    # Not progress: a quota event says nothing about the deploy.
    deploy.apply(
        QuotaExceeded(resource_id=stack_id, usage_bytes=2, quota_bytes=1),
        START + timedelta(seconds=30),
    )
    assert (deploy.view.status, deploy.view.revision, deploy.moved_at) == (
        StackStatus.BUILDING,
        1,
        started,
    )

    ready = START + timedelta(seconds=40)
    deploy.apply(StackReady(resource_id=stack_id, revision=1), ready)
    assert (deploy.view.status, deploy.moved_at) == (StackStatus.RUNNING, ready)


def test_an_older_revision_finishing_late_leaves_the_newer_deploy_under_way() -> None:
    stack_id = uuid.uuid4()
    deploy = DeployProgress()
    deploy.apply(StackDeployStarted(resource_id=stack_id, revision=2, services=["web"]), START)
    deploy.apply(StackReady(resource_id=stack_id, revision=1), START + timedelta(seconds=1))
    assert (deploy.view.status, deploy.view.revision) == (StackStatus.BUILDING, 2)
