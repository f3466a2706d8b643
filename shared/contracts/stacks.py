"""The stack manifest (``spinup.yaml``): a small, documented subset of the compose format.

    services:
      web:
        build: web.tar            # the uploaded build context (a tarball with a Dockerfile)
        port: 8080                # the HTTP port served at the stack's public URL for "web"
        env: {GREETING: hello}
        depends_on: [worker]
        limits: {memory_mb: 128, cpu_millis: 250, pids: 64}
      worker:
        image: spinup/base:bookworm   # a base image stacks are given (BASE_IMAGES)
        command: ["python3", "-m", "http.server", "9000"]
    resources:                    # backing services, provisioned like any other resource
      db: {type: postgres}
      cache: {type: redis}

Every backing resource's credentials reach every container as environment variables: the plain
names (``DATABASE_URL``, ``REDIS_URL``, ``MONGODB_URL``, ``NATS_URL`` + ``NATS_CREDS``, ``S3_*``)
when one resource has that type, and the same names prefixed with the resource's name in capitals
(``DB_DATABASE_URL``) always. ``parse_manifest`` refuses an invalid manifest with the field and
the line; ``check_manifest`` holds it to the plan's stack limits and the uploaded files.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import yaml

from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.kinds import (
    Credentials,
    MongoCredentials,
    NatsCredentials,
    PostgresCredentials,
    RedisCredentials,
    ResourceKind,
    S3Credentials,
    StackLimits,
)

#: The images a stack may run (``image:``) or build from (``FROM``, ``COPY --from``). Nothing else
#: on the engine is a tenant's to use: other stacks' builds, the platform's own images (ADR 0064).
BASE_IMAGES = frozenset({"spinup/base:bookworm"})
#: The manifest's file name in an upload.
MANIFEST_NAME = "spinup.yaml"
#: The kinds a stack may ask for under ``resources:``.
BACKING_KINDS = frozenset(
    {
        ResourceKind.POSTGRES,
        ResourceKind.REDIS,
        ResourceKind.MONGO,
        ResourceKind.NATS,
        ResourceKind.S3,
    }
)
# Service and resource names become DNS aliases, container names and env prefixes.
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_ENV_VALUE = 32 * 1024
# Fixed namespace: a backing resource's id follows from its stack's id and its name.
_BACKING_NAMESPACE = uuid.UUID("5b0b7c5e-2d55-4f1e-b1a2-6a8c1d2e3f40")


class ServiceLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one container may use; each at most the plan's value (the default)."""

    memory_mb: int | None = None
    cpu_millis: int | None = None
    pids: int | None = None


class ServiceManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One container: built from an uploaded context (``build``) or run from ``image``."""

    build: str | None = None
    image: str | None = None
    command: list[str] | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    port: int | None = None
    depends_on: list[str] = msgspec.field(default_factory=list)
    limits: ServiceLimits = msgspec.field(default_factory=ServiceLimits)
    #: The root filesystem is read-only (``/tmp`` is writable): false for an app that writes
    #: elsewhere in its image.
    read_only: bool = True


class BackingResource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A resource the stack asks Spinup for."""

    type: ResourceKind


class StackManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole ``spinup.yaml``."""

    services: dict[str, ServiceManifest]
    resources: dict[str, BackingResource] = msgspec.field(default_factory=dict)

    def start_order(self) -> list[str]:
        """Service names, each after everything it ``depends_on`` (the manifest is checked)."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name not in ordered:
                for dependency in self.services[name].depends_on:
                    visit(dependency)
                ordered.append(name)

        for name in sorted(self.services):
            visit(name)
        return ordered


class StackLogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line on a stack's logs subject (``stack_logs_subject``), JSON-encoded.

    ``source`` is ``deploy`` (the deployer's own steps), ``build:<service>`` or ``<service>``.
    """

    at: datetime
    source: str
    line: str


def public_url(base_url: str, stack_id: uuid.UUID, service: str) -> str:
    """The public address of a stack's service: path-based under the gateway (ADR 0011)."""
    return f"{base_url.rstrip('/')}/apps/{stack_id}/{service}/"


class ManifestError(SpinupError):
    """The manifest is not valid: ``field`` is a dotted path, ``line`` 1-based (0: unknown)."""

    def __init__(self, field: str, line: int, problem: str) -> None:
        where = f"{MANIFEST_NAME} line {line}" if line else MANIFEST_NAME
        subject = f"`{field}`" if field else "the manifest"
        super().__init__(ErrorCode.INVALID_MANIFEST, f"{where}: {subject} {problem}")
        self.field = field
        self.line = line


def _line_of(root: yaml.Node | None, path: list[str]) -> int:
    """The line of the node at ``path`` (the deepest one found), 1-based."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 0
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
            if match is None or key is None:
                break
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _msgspec_path(message: str) -> tuple[list[str], str]:
    """Split msgspec's ``Expected `int`, got `str` - at `$.services.web.port``."""
    problem, _, where = message.partition(" - at `")
    parts = re.findall(r"\.([^.\[\]`]+)|\[(\d+)\]", where.rstrip("`"))
    return [name or index for name, index in parts], problem


def _section(root: yaml.Node | None, raw: dict[Any, Any], name: str) -> dict[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ManifestError(name, _line_of(root, [name]), "must be a mapping of names")
    return value


T = TypeVar("T")


def _convert(root: yaml.Node | None, at: list[str], value: object, into: type[T]) -> T:
    try:
        return msgspec.convert(value, into, str_keys=True)
    except msgspec.ValidationError as exc:
        path, problem = _msgspec_path(str(exc))
        path = [*at, *path]
        if problem.startswith("Object contains unknown field"):
            unknown = problem.split("`")[1] if "`" in problem else ""
            path = [*path, unknown] if unknown else path
            raise ManifestError(
                ".".join(path), _line_of(root, path), "is not a known field"
            ) from None
        if problem.startswith("Expected `object`"):
            problem = "must be a mapping"
        raise ManifestError(
            ".".join(path), _line_of(root, path), f"is invalid: {problem}"
        ) from None


def parse_manifest(text: bytes | str) -> StackManifest:
    """Read and validate a manifest's shape.

    Raises:
        ManifestError: not YAML, or a field is missing, unknown, mistyped or badly named.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or "is not valid YAML"
        raise ManifestError("", line, f"is not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ManifestError("", _line_of(root, []), "must be a mapping with `services:`")
    unknown = sorted(str(key) for key in raw if key not in {"services", "resources"})
    if unknown:
        raise ManifestError(unknown[0], _line_of(root, [unknown[0]]), "is not a known section")
    # One section entry at a time: msgspec hides mapping keys in its error paths.
    services = {
        name: _convert(root, ["services", name], value, ServiceManifest)
        for name, value in _section(root, raw, "services").items()
    }
    resources = {
        name: _convert(root, ["resources", name], value, BackingResource)
        for name, value in _section(root, raw, "resources").items()
    }
    manifest = StackManifest(services=services, resources=resources)
    _check_shape(manifest, root)
    return manifest


def _check_shape(manifest: StackManifest, root: yaml.Node | None) -> None:  # noqa: C901, PLR0912  (one check per rule, in manifest order)
    def fail(path: list[str], problem: str) -> ManifestError:
        return ManifestError(".".join(path), _line_of(root, path), problem)

    if not manifest.services:
        raise fail(["services"], "must name at least one service")
    for section, names in (("services", manifest.services), ("resources", manifest.resources)):
        for name in names:
            if not _NAME_RE.match(name):
                raise fail(
                    [section, name], "must be 1-30 of a-z, 0-9 and -, starting with a letter"
                )
    for key, resource in manifest.resources.items():
        if resource.type not in BACKING_KINDS:
            kinds = ", ".join(sorted(kind.value for kind in BACKING_KINDS))
            raise fail(["resources", key, "type"], f"must be one of {kinds}")
    for name, service in manifest.services.items():
        at = ["services", name]
        if (service.build is None) == (service.image is None):
            raise fail(at, "needs exactly one of `build` (an uploaded tarball) or `image`")
        if service.image is not None and service.image not in BASE_IMAGES:
            bases = ", ".join(sorted(BASE_IMAGES))
            raise fail(
                [*at, "image"],
                f"must be {bases}: other images on the engine are other stacks' or the"
                f" platform's. To run anything else, `build` it from a Dockerfile FROM {bases}",
            )
        if service.port is not None and not 1 <= service.port <= 65535:  # noqa: PLR2004
            raise fail([*at, "port"], "must be a TCP port (1-65535)")
        if service.command is not None and not service.command:
            raise fail([*at, "command"], "must not be empty")
        for variable, value in service.env.items():
            if not _ENV_NAME_RE.match(variable):
                raise fail([*at, "env", variable], "is not a valid environment variable name")
            if len(value) > _MAX_ENV_VALUE or "\x00" in value:
                raise fail([*at, "env", variable], "must be under 32 KiB with no NUL character")
        for dependency in service.depends_on:
            if dependency not in manifest.services or dependency == name:
                raise fail(
                    [*at, "depends_on"], f"names {dependency!r}, which is not another service"
                )
    try:
        _acyclic(manifest)
    except ValueError as exc:
        raise fail(["services"], f"have a depends_on cycle: {exc}") from None


def _acyclic(manifest: StackManifest) -> None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in done:
            return
        if name in visiting:
            raise ValueError(" -> ".join([*trail, name]))
        visiting.add(name)
        for dependency in manifest.services[name].depends_on:
            visit(dependency, [*trail, name])
        visiting.discard(name)
        done.add(name)

    for name in manifest.services:
        visit(name, [])


def check_manifest(manifest: StackManifest, limits: StackLimits, uploads: dict[str, int]) -> None:
    """Hold the manifest to the plan and to the uploaded files (name -> size in bytes).

    Raises:
        ManifestError: more services than the plan allows, a limit above the plan's, a
            ``build`` naming a file that was not uploaded, or a file nothing builds.
    """
    if len(manifest.services) > limits.services:
        msg = f"has {len(manifest.services)} services; the plan allows {limits.services}"
        raise ManifestError("services", 0, msg)
    for name, service in manifest.services.items():
        for field, allowed in (
            ("memory_mb", limits.memory_mb),
            ("cpu_millis", limits.cpu_millis),
            ("pids", limits.pids),
        ):
            asked = getattr(service.limits, field)
            if asked is not None and not 0 < asked <= allowed:
                path = f"services.{name}.limits.{field}"
                raise ManifestError(path, 0, f"must be between 1 and the plan's {allowed}")
        if service.build is not None and service.build not in uploads:
            field = f"services.{name}.build"
            msg = f"names {service.build!r}, which is not among the uploaded files"
            raise ManifestError(field, 0, msg)
    built = {service.build for service in manifest.services.values()}
    unused = sorted(set(uploads) - built)
    if unused:
        msg = f"does not use the uploaded file(s) {', '.join(unused)}: name each in a `build`"
        raise ManifestError("services", 0, msg)


def backing_resource_id(stack_id: uuid.UUID, name: str) -> uuid.UUID:
    """The id of the stack's backing resource ``name``: the same on every retry and replica."""
    return uuid.uuid5(_BACKING_NAMESPACE, f"{stack_id}|{name}")


def _variables(credentials: Credentials) -> dict[str, str]:
    match credentials:
        case PostgresCredentials():
            return {"DATABASE_URL": credentials.connection_url}
        case RedisCredentials():
            return {
                "REDIS_URL": credentials.connection_url,
                "REDIS_KEY_PREFIX": credentials.key_prefix,
            }
        case MongoCredentials():
            return {"MONGODB_URL": credentials.connection_url}
        case NatsCredentials():
            return {"NATS_URL": credentials.connection_url, "NATS_CREDS": credentials.creds}
        case S3Credentials():
            return {
                "S3_ENDPOINT": credentials.endpoint,
                "S3_REGION": credentials.region,
                "S3_BUCKET": credentials.bucket,
                "S3_ACCESS_KEY_ID": credentials.access_key,
                "S3_SECRET_ACCESS_KEY": credentials.secret_key,
            }
    return {}


def injected_env(manifest: StackManifest, credentials: dict[str, Credentials]) -> dict[str, str]:
    """The variables every container gets from the backing resources (by resource name)."""
    env: dict[str, str] = {}
    kinds = [resource.type for resource in manifest.resources.values()]
    for name, resource in sorted(manifest.resources.items()):
        variables = _variables(credentials[name])
        prefix = name.upper().replace("-", "_")
        env.update({f"{prefix}_{key}": value for key, value in variables.items()})
        if kinds.count(resource.type) == 1:
            env.update(variables)
    return env
