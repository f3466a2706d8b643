import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gateway.errors import HTTP_STATUS
from shared.contracts import events
from shared.contracts.commands import ProvisionResource
from shared.contracts.errors import ErrorCode
from shared.contracts.kinds import PostgresLimits, ResourceKind
from shared.contracts.subjects import (
    DEPROVISION_ENDPOINTS,
    PROVISION_ENDPOINTS,
)

# Stored event tags are forever: renaming one orphans every stored event of that type.
STORED_EVENT_TAGS = {
    "ResourceProvisionRequested",
    "ResourceProvisioned",
    "ResourceProvisionFailed",
    "ResourceDeprovisionRequested",
    "ResourceDeprovisioned",
    "ResourceClaimed",
    "CredentialsRotated",
    "QuotaExceeded",
    "QuotaRestored",
    "ResourceExtended",
    "NotifyTargetSet",
    "ResourceSuspended",
    "NotificationQueued",
    "NotificationDelivered",
    "NotificationAttemptFailed",
    "PoolMemberRequested",
    "PoolMemberReady",
    "PoolMemberTaken",
    "PoolMemberDropped",
    "AccountRegistered",
    "AccessTokenCreated",
    "AccessTokenRevoked",
    "SessionRevoked",
    "ClaimStarted",
    "ClaimCompleted",
    "StackDeployStarted",
    "StackServiceBuilt",
    "StackServiceStarted",
    "StackReady",
    "StackFailed",
    "StackStopped",
}


def test_stored_event_tags_are_pinned() -> None:
    tags = {cls.__struct_config__.tag for cls in events.StoredEvent.__args__}
    assert tags == STORED_EVENT_TAGS


def test_every_error_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)


def test_the_readme_lists_every_error_code_under_its_status() -> None:
    listed = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = listed.index("`400 invalid_json")
    errors = " ".join(listed[start : listed.index("\n\n", start)].split())
    for code, status in HTTP_STATUS.items():
        assert re.search(rf"`{status} [^`]*\b{code.value}\b", errors), (status, code.value)


def test_every_kind_has_provision_and_deprovision_endpoints_with_own_subjects() -> None:
    assert set(PROVISION_ENDPOINTS) == set(ResourceKind) == set(DEPROVISION_ENDPOINTS)
    endpoints = [*PROVISION_ENDPOINTS.values(), *DEPROVISION_ENDPOINTS.values()]
    assert len({e.subject for e in endpoints}) == len(endpoints)
    assert all(e.subject.startswith("prov.v1.") and e.timeout > 0 for e in endpoints)


def test_internal_messages_tolerate_unknown_fields_from_newer_senders() -> None:
    command = ProvisionResource(
        command_id=uuid.uuid4(),
        correlation_id="c",
        deadline=1.0,
        resource_id=uuid.uuid4(),
        kind=ResourceKind.POSTGRES,
        tier="t",
        limits=PostgresLimits(
            storage_mb=1, connections=1, statement_timeout_ms=1, temp_file_limit_mb=1
        ),
        token_hash="h",
        fingerprint="f",
        expires_at=datetime.now(UTC),
    )
    raw = msgspec.json.decode(msgspec.json.encode(command))
    raw["added_in_a_later_version"] = 1
    assert msgspec.json.decode(msgspec.json.encode(raw), type=ProvisionResource) == command
