"""The manifest parser names the field and the line of every mistake, before anything is built."""

import uuid

import pytest

from shared.contracts.events import (
    StackDeployStarted,
    StackFailed,
    StackReady,
    StackServiceBuilt,
    StackServiceStarted,
)
from shared.contracts.kinds import (
    PostgresCredentials,
    RedisCredentials,
    ResourceKind,
    StackLimits,
)
from shared.contracts.stacks import (
    BASE_IMAGES,
    ManifestError,
    backing_resource_id,
    check_manifest,
    injected_env,
    parse_manifest,
)
from shared.stacks.state import ServiceStatus, StackStatus, StackView

EXAMPLE = b"""\
services:
  web:
    build: web.tar
    port: 8080
    depends_on: [worker]
    env: {GREETING: hello}
  worker:
    image: spinup/base:bookworm
    command: ["python3", "-c", "print(1)"]
    limits: {memory_mb: 64}
resources:
  db: {type: postgres}
  cache: {type: redis}
"""
BASE = next(iter(BASE_IMAGES)).encode()
LIMITS = StackLimits(services=3, memory_mb=256, cpu_millis=500, pids=128, upload_mb=50)


def test_a_valid_manifest_parses_and_orders_services_after_their_dependencies() -> None:
    manifest = parse_manifest(EXAMPLE)
    assert manifest.start_order() == ["worker", "web"]
    assert manifest.services["web"].port == 8080
    assert manifest.resources["db"].type is ResourceKind.POSTGRES
    check_manifest(manifest, LIMITS, {"web.tar": 1024})


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        (b"services:\n  web:\n    build: x.tar\n    prot: 80\n", "services.web.prot", 4),
        (b"services:\n  web:\n    build: x.tar\n    port: eighty\n", "services.web.port", 4),
        (b"services:\n  web:\n    build: x.tar\n    port: 70000\n", "services.web.port", 4),
        (b"services:\n  web:\n    image: a\n    build: b\n", "services.web", 2),
        (b"services:\n  web: {}\n", "services.web", 2),
        (b"services:\n  Web:\n    image: x\n", "services.Web", 2),
        (b"services:\n  a:\n    image: x\n", "services.a.image", 3),
        (b"services:\n  a:\n    image: spinup-stack/other-web:r1\n", "services.a.image", 3),
        (
            b"services:\n  a:\n    image: " + BASE + b"\n    depends_on: [b]\n",
            "services.a.depends_on",
            4,
        ),
        (b"servics: {}\n", "servics", 1),
        (
            b"services:\n  a:\n    image: x\nresources:\n  w: {type: webhook}\n",
            "resources.w.type",
            5,
        ),
        (
            b"services:\n  a:\n    image: " + BASE + b"\n    env: {1BAD: v}\n",
            "services.a.env.1BAD",
            4,
        ),
        (b"services: {}\n", "services", 1),
    ],
)
def test_an_invalid_manifest_names_the_field_and_the_line(
    text: bytes, field: str, line: int
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert (caught.value.field, caught.value.line) == (field, line)
    assert f"line {line}" in caught.value.message
    assert f"`{field}`" in caught.value.message


def test_a_dependency_cycle_is_refused() -> None:
    text = (
        b"services:\n  a:\n    image: " + BASE + b"\n    depends_on: [b]\n"
        b"  b:\n    image: " + BASE + b"\n    depends_on: [a]\n"
    )
    with pytest.raises(ManifestError, match="cycle"):
        parse_manifest(text)


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(b"services:\n  web:\n    build: [x\n")
    assert caught.value.line >= 3


def test_the_plan_and_the_uploads_bound_the_manifest() -> None:
    manifest = parse_manifest(EXAMPLE)
    with pytest.raises(ManifestError, match="not among the uploaded files"):
        check_manifest(manifest, LIMITS, {})
    with pytest.raises(ManifestError, match="does not use the uploaded file"):
        check_manifest(manifest, LIMITS, {"web.tar": 1, "extra.tar": 1})
    with pytest.raises(ManifestError, match="plan allows 1"):
        check_manifest(manifest, StackLimits(**{**_fields(LIMITS), "services": 1}), {"web.tar": 1})
    with pytest.raises(ManifestError, match="memory_mb"):
        check_manifest(
            manifest, StackLimits(**{**_fields(LIMITS), "memory_mb": 32}), {"web.tar": 1}
        )


def _fields(limits: StackLimits) -> dict[str, object]:
    return {name: getattr(limits, name) for name in limits.__struct_fields__}


def test_backing_credentials_become_plain_and_prefixed_variables() -> None:
    manifest = parse_manifest(EXAMPLE)
    pg = PostgresCredentials(
        connection_url="postgresql://u:p@h:5432/d",
        host="h",
        port=5432,
        database="d",
        username="u",
        password="p",
    )
    redis = RedisCredentials(
        connection_url="redis://u:p@h:6379",
        host="h",
        port=6379,
        username="u",
        password="p",
        key_prefix="t_x:",
    )
    env = injected_env(manifest, {"db": pg, "cache": redis})
    assert env["DATABASE_URL"] == env["DB_DATABASE_URL"] == pg.connection_url
    assert env["REDIS_URL"] == env["CACHE_REDIS_URL"] == redis.connection_url
    assert env["REDIS_KEY_PREFIX"] == "t_x:"
    two = parse_manifest(
        b"services:\n  a:\n    image: " + BASE + b"\n"
        b"resources:\n  one: {type: postgres}\n  two: {type: postgres}\n"
    )
    env = injected_env(two, {"one": pg, "two": pg})
    assert "DATABASE_URL" not in env
    assert {"ONE_DATABASE_URL", "TWO_DATABASE_URL"} <= set(env)


def test_backing_ids_are_stable_per_stack_and_name() -> None:
    stack = uuid.uuid4()
    assert backing_resource_id(stack, "db") == backing_resource_id(stack, "db")
    assert backing_resource_id(stack, "db") != backing_resource_id(stack, "cache")
    assert backing_resource_id(stack, "db") != backing_resource_id(uuid.uuid4(), "db")


def test_the_stack_view_follows_the_latest_revision_only() -> None:
    rid = uuid.uuid4()
    view = StackView.fold(
        [
            StackDeployStarted(resource_id=rid, revision=1, services=["web"]),
            StackServiceBuilt(resource_id=rid, revision=1, service="web", image="i1"),
            StackServiceStarted(
                resource_id=rid, revision=1, service="web", container="c1", host="127.0.0.1", port=1
            ),
            StackReady(resource_id=rid, revision=1),
            StackDeployStarted(resource_id=rid, revision=2, services=["web"]),
            # A late event of the replaced revision changes nothing.
            StackFailed(resource_id=rid, revision=1, service="web", reason="x", logs_tail=""),
        ]
    )
    assert (view.revision, view.status) == (2, StackStatus.BUILDING)
    assert view.services["web"].status is ServiceStatus.WAITING
