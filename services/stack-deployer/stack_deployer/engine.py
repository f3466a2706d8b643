"""The container engine as the deployer uses it: networks, builds, containers, by label.

Everything made here carries ``io.spinup.scope=<scope>`` (what devstack removes when a throwaway
profile stops) and ``io.spinup.stack=<stack id>`` (what a stack's teardown removes), so a stack's
whole footprint is found by label, even after a worker crash lost its in-memory state.

Hardening, the same on every container: root in a container is not root on the host (the
engine must remap user namespaces: ``Engine.connect`` refuses one that does not), all
capabilities dropped, ``no-new-privileges``, the engine's default seccomp profile (never
``unconfined``), no privileged mode and no host mounts, a private IPC namespace, a read-only
root filesystem with a small ``/tmp`` unless the manifest says ``read_only: false``, memory
(without extra swap), CPU and pids limits, the HTTP port published on 127.0.0.1 only (the gateway
proxies the public URL to it), and the stack's own bridge network (``sp-<id>``), whose name
resolves only its own services. What a container may connect to beyond its network is the
firewall's (``stack_deployer.firewall``): its builds run on that same network, under the same
rules, so a build reaches the internet only when the stack's plan allows it.

Nothing is ever pulled: a ``FROM`` or ``image`` must already be on the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiodocker
import structlog
from aiodocker.exceptions import DockerError
from aiodocker.types import SENTINEL

from shared.contracts.errors import BackendUnavailableError
from stack_deployer.firewall import Egress, bridge_name, decode_egress, encode_egress

log = structlog.get_logger("stack_deployer.engine")

#: Label on everything one deployment (one devstack profile) makes; devstack.engine removes by it.
SCOPE_LABEL = "io.spinup.scope"
#: Label naming the stack a network, image or container belongs to.
STACK_LABEL = "io.spinup.stack"
SERVICE_LABEL = "io.spinup.service"
REVISION_LABEL = "io.spinup.revision"
#: What the container may reach (``stack_deployer.firewall.Egress`` as JSON): rules are rebuilt
#: from it after a restart.
EGRESS_LABEL = "io.spinup.egress"
#: Writable scratch space of a container whose root filesystem is read-only.
_TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m"}  # noqa: S108 (inside the container)

_MB = 1024 * 1024
# The engine's CPU quota is in billionths of a core; plans give thousandths.
_NANOS_PER_MILLI = 1_000_000
#: A build step's CPU is a quota per period (the classic builder takes no ``NanoCpus``).
_CPU_PERIOD_US = 100_000
_NOT_FOUND = 404
#: The classic builder's line for the image a step committed (`` ---> 1a2b3c4d5e6f``); a step
#: that runs says `` ---> Running in <container>`` first.
_COMMITTED_STEP = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_CONFLICT = 409
_NOT_MODIFIED = 304
# A container whose main process keeps dying is restarted this often before it stays down.
_RESTART_RETRIES = 3


class BuildFailedError(Exception):
    """The engine refused or failed a build; the message is the engine's."""


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One service's container, fully decided (limits already resolved against the plan)."""

    stack_id: str
    service: str
    revision: int
    image: str
    command: list[str] | None
    env: Mapping[str, str]
    port: int | None
    memory_mb: int
    cpu_millis: int
    pids: int
    egress: Egress
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What the engine says about a container now."""

    container_id: str
    service: str
    revision: int
    running: bool
    restarts: int
    exit_code: int
    error: str
    host_port: int | None


def network_name(stack_id: str) -> str:
    """The stack's bridge network."""
    return f"spinup-{stack_id}"


def container_name(stack_id: str, service: str, revision: int) -> str:
    """A container's name: unique per stack, service and revision."""
    return f"spinup-{stack_id}-{service}-r{revision}"


def image_tag(stack_id: str, service: str, revision: int) -> str:
    """The tag a built service's image gets."""
    return f"spinup-stack/{stack_id}-{service}:r{revision}"


class Engine:
    """The engine API through aiodocker, limited to one scope."""

    def __init__(self, docker: aiodocker.Docker, scope: str, loopback_alias: str = "") -> None:
        self._docker = docker
        self._scope = scope
        # "<name>:host-gateway": the engine resolves it to its own host's address.
        self._extra_hosts = [f"{loopback_alias}:host-gateway"] if loopback_alias else []

    @classmethod
    async def connect(cls, url: str, scope: str, loopback_alias: str = "") -> Engine:
        """Connect and check the engine answers.

        Raises:
            BackendUnavailableError: nothing answers at ``url``.
        """
        docker = aiodocker.Docker(url=url)
        try:
            info = await docker.system.info()
        except (DockerError, OSError) as exc:
            await docker.close()
            msg = "The container engine is unreachable."
            raise BackendUnavailableError(msg) from exc
        if not _remaps_root(info):
            await docker.close()
            msg = (
                "The container engine runs containers as the host's root: start dockerd with "
                '--userns-remap=default (daemon.json: "userns-remap": "default").'
            )
            raise BackendUnavailableError(msg)
        return cls(docker, scope, loopback_alias)

    async def host_gateway(self) -> str | None:
        """The address ``host-gateway`` stands for: the default bridge's gateway."""
        try:
            details = await (await self._docker.networks.get("bridge")).show()
        except DockerError:
            return None
        for pool in (details.get("IPAM") or {}).get("Config") or []:
            gateway = pool.get("Gateway")
            if isinstance(gateway, str) and gateway:
                return gateway
            # Unless configured, the engine does not name it: the first address of the subnet.
            subnet = pool.get("Subnet")
            if isinstance(subnet, str) and subnet:
                return str(next(ipaddress.IPv4Network(subnet).hosts()))
        return None

    async def close(self) -> None:
        """Close the engine connection."""
        await self._docker.close()

    @property
    def docker(self) -> aiodocker.Docker:
        """The aiodocker client (for log following)."""
        return self._docker

    def labels(self, stack_id: str, **extra: str) -> dict[str, str]:
        """The labels of something made for ``stack_id``."""
        return {SCOPE_LABEL: self._scope, STACK_LABEL: stack_id, **extra}

    def _selector(self, stack_id: str) -> dict[str, list[str]]:
        return {"label": [f"{SCOPE_LABEL}={self._scope}", f"{STACK_LABEL}={stack_id}"]}

    # -- networks --------------------------------------------------------------------------

    async def ensure_network(self, stack_id: str) -> str:
        """Create the stack's bridge network unless it exists; its name."""
        name = network_name(stack_id)
        existing = await self._docker.networks.list(filters={"name": [name]})
        if any(network.get("Name") == name for network in existing):
            return name
        try:
            await self._docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    # The firewall matches every stack's traffic by this interface name.
                    "Options": {"com.docker.network.bridge.name": bridge_name(stack_id)},
                    "CheckDuplicate": True,
                    "Labels": self.labels(stack_id),
                }
            )
        except DockerError as exc:
            # Two creates racing: the loser finds the winner's network.
            if exc.status != _CONFLICT:
                raise
        return name

    async def network_gateway(self, stack_id: str) -> str | None:
        """The host's address on the stack's network (where containers reach the host)."""
        try:
            network = await self._docker.networks.get(network_name(stack_id))
            details = await network.show()
        except DockerError:
            return None
        for pool in (details.get("IPAM") or {}).get("Config") or []:
            gateway = pool.get("Gateway")
            if isinstance(gateway, str) and gateway:
                return gateway
        return None

    async def remove_network(self, stack_id: str) -> None:
        """Remove the stack's network (idempotent)."""
        for network in await self._docker.networks.list(filters=self._selector(stack_id)):
            with contextlib.suppress(DockerError):
                await (await self._docker.networks.get(network["Id"])).delete()

    # -- images ----------------------------------------------------------------------------

    async def image_exists(self, image: str) -> bool:
        """True when ``image`` is on the engine."""
        try:
            await self._docker.images.inspect(image)
        except DockerError as exc:
            if exc.status == _NOT_FOUND:
                return False
            raise
        return True

    async def build(
        self,
        stack_id: str,
        service: str,
        revision: int,
        context: bytes,
        on_line: Callable[[str], Awaitable[None]],
        *,
        memory_mb: int,
        cpu_millis: int,
    ) -> str:
        """Build ``context`` (a tarball, plain or compressed) into the service's image tag.

        Each ``RUN`` step's container gets the service's memory (no swap on top) and CPU, as
        its containers do: without them a step had the whole host's. The classic builder takes
        no pids limit; docs/security.md says what that leaves.

        Raises:
            BuildFailedError: the Dockerfile failed or named an image the engine lacks.
        """
        tag = image_tag(stack_id, service, revision)
        labels = self.labels(stack_id, **{SERVICE_LABEL: service, REVISION_LABEL: str(revision)})
        params = {
            "t": tag,
            "labels": json.dumps(labels),
            "pull": "0",
            "rm": "1",
            "forcerm": "1",
            # The engine's build cache is shared by every stack: a step another live stack had
            # built from the same files showed "Using cache" in this tenant's build log, which
            # told it what files another tenant had uploaded (ADR 0054).
            "nocache": "1",
            "memory": str(memory_mb * _MB),
            "memswap": str(memory_mb * _MB),
            "cpuperiod": str(_CPU_PERIOD_US),
            "cpuquota": str(cpu_millis * _CPU_PERIOD_US // 1000),
            # RUN steps get the stack's own network and so its egress rules: without this they
            # would run on the engine's default bridge, where nothing limits them.
            "networkmode": network_name(stack_id),
        }
        # The image each step committed: what a build that stops short leaves behind.
        committed: str | None = None
        try:
            # aiodocker's images.build() cannot name the network, so the same call is made here.
            # The engine detects gzip, bzip2 and xz contexts itself: "identity" sends them as is.
            response = self._docker._query(  # noqa: SLF001
                "build",
                "POST",
                params=params,
                headers={"content-type": "application/x-tar", "Content-Encoding": "identity"},
                data=context,
                timeout=self._docker._resolve_long_running_timeout(SENTINEL),  # noqa: SLF001
            )
            stream = self._docker.images._handle_stream(response)  # type: ignore[no-untyped-call]  # noqa: SLF001
            async for chunk in stream:
                text = chunk.get("stream")
                if isinstance(text, str):
                    for line in text.splitlines():
                        step = _COMMITTED_STEP.match(line)
                        committed = step.group(1) if step else committed
                        if line.strip():
                            await on_line(line)
        except BaseException as exc:
            await self._remove_unfinished(committed)
            if isinstance(exc, DockerError):
                raise BuildFailedError(with_registry_hint(_docker_message(exc))) from exc
            raise
        if not await self.image_exists(tag):
            await self._remove_unfinished(committed)
            msg = "the build ended without an image"
            raise BuildFailedError(msg)
        return tag

    async def _remove_unfinished(self, committed: str | None) -> None:
        """Remove what a build that stopped short committed: its last step and the steps below.

        Only the finished image carries the stack's labels, so ``remove_images`` never finds
        these. Untagged and unlabelled, they stayed on the engine for ever, with the files the
        tenant's upload copied in. Removed without ``force``: a step another build's image
        grew from (the build cache) stays with it, and so does a tagged one (the base image).
        """
        if committed is None:
            return
        with contextlib.suppress(DockerError):
            found = await self._docker.images.inspect(committed)
            if not found.get("RepoTags"):
                await asyncio.shield(self._docker.images.delete(committed, noprune=False))

    async def remove_images(self, stack_id: str, *, keep_revision: int | None = None) -> None:
        """Remove the stack's built images, except those of ``keep_revision``."""
        images = await self._docker.images.list(filters=self._selector(stack_id))
        for image in images:
            labels = image.get("Labels") or {}
            if keep_revision is not None and labels.get(REVISION_LABEL) == str(keep_revision):
                continue
            with contextlib.suppress(DockerError):
                await self._docker.images.delete(image["Id"], force=True)

    # -- containers ------------------------------------------------------------------------

    async def run(self, spec: ContainerSpec) -> ContainerState:
        """Create and start the service's container (replacing one of the same name).

        Raises:
            DockerError: the engine refused the container (bad image, bad command...).
        """
        network = network_name(spec.stack_id)
        name = container_name(spec.stack_id, spec.service, spec.revision)
        port_key = f"{spec.port}/tcp" if spec.port is not None else None
        host_config: dict[str, Any] = {
            "NetworkMode": network,
            "Memory": spec.memory_mb * _MB,
            # Equal to Memory: no swap on top of the plan's memory.
            "MemorySwap": spec.memory_mb * _MB,
            "NanoCpus": spec.cpu_millis * _NANOS_PER_MILLI,
            "PidsLimit": spec.pids,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Privileged": False,
            "IpcMode": "private",
            "ReadonlyRootfs": spec.read_only,
            # A small init (the engine's docker-init) as PID 1: it forwards SIGTERM, which an app
            # as PID 1 ignores unless it installs a handler, and reaps zombies. Stop and restart
            # then take as long as the app needs, not the 10 s grace before SIGKILL.
            "Init": True,
            "Tmpfs": _TMPFS if spec.read_only else {},
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": _RESTART_RETRIES},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
            "ExtraHosts": self._extra_hosts,
        }
        config: dict[str, Any] = {
            "Image": spec.image,
            "Hostname": spec.service,
            "Env": [f"{key}={value}" for key, value in spec.env.items()],
            "Labels": self.labels(
                spec.stack_id,
                **{
                    SERVICE_LABEL: spec.service,
                    REVISION_LABEL: str(spec.revision),
                    EGRESS_LABEL: encode_egress(spec.egress),
                },
            ),
            "HostConfig": host_config,
            "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [spec.service]}}},
        }
        if spec.command is not None:
            config["Cmd"] = spec.command
        if port_key is not None:
            config["ExposedPorts"] = {port_key: {}}
            host_config["PortBindings"] = {port_key: [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        await self._remove_named(name)
        container = await self._docker.containers.create(config, name=name)
        await container.start()
        return await self.state(container.id)

    async def _remove_named(self, name: str) -> None:
        with contextlib.suppress(DockerError):
            await self._docker.containers.container(name).delete(force=True, v=True)

    async def state(self, container_id: str) -> ContainerState:
        """Inspect one container."""
        container = await self._docker.containers.get(container_id)
        return _state_of(container._container)  # noqa: SLF001  (aiodocker keeps inspect data here)

    async def containers(self, stack_id: str, *, revision: int | None = None) -> list[str]:
        """Ids of the stack's containers (of one revision, or all), running or not."""
        selector = self._selector(stack_id)
        if revision is not None:
            selector["label"].append(f"{REVISION_LABEL}={revision}")
        found = await self._docker.containers.list(all=True, filters=_filters(selector))
        return [container.id for container in found]

    async def running_in_scope(self) -> list[tuple[str, str]]:
        """(container id, stack id) of every running container of this scope."""
        selector = {"label": [f"{SCOPE_LABEL}={self._scope}"]}
        found = await self._docker.containers.list(filters=_filters(selector))
        return [
            (container.id, str(container._container.get("Labels", {}).get(STACK_LABEL, "")))  # noqa: SLF001
            for container in found
        ]

    async def egress_by_stack(self) -> dict[str, Egress]:
        """What each stack of this scope with a container may reach, from the containers' labels."""
        selector = {"label": [f"{SCOPE_LABEL}={self._scope}"]}
        found = await self._docker.containers.list(all=True, filters=_filters(selector))
        egress: dict[str, Egress] = {}
        for container in found:
            labels = container._container.get("Labels") or {}  # noqa: SLF001
            stack_id = str(labels.get(STACK_LABEL, ""))
            if stack_id:
                egress[stack_id] = decode_egress(str(labels.get(EGRESS_LABEL, "")))
        return egress

    async def stop(self, container_ids: list[str], *, timeout_s: int) -> None:
        """Stop containers; they keep their image, name and log."""
        containers = [self._docker.containers.container(c) for c in container_ids]
        await asyncio.gather(*(self._ignore_gone(c.stop(t=timeout_s)) for c in containers))

    async def start(self, container_ids: list[str]) -> None:
        """Start stopped containers again."""
        for container_id in container_ids:
            await self._ignore_gone(self._docker.containers.container(container_id).start())

    async def restart(self, container_ids: list[str], *, timeout_s: int) -> None:
        """Restart containers (stop then start)."""
        for container_id in container_ids:
            await self._docker.containers.container(container_id).restart(t=timeout_s)

    async def remove_containers(self, stack_id: str, *, keep_revision: int | None = None) -> None:
        """Kill and remove the stack's containers, except those of ``keep_revision``."""
        selector = self._selector(stack_id)
        found = await self._docker.containers.list(all=True, filters=_filters(selector))
        doomed = [
            container
            for container in found
            if keep_revision is None
            or container._container.get("Labels", {}).get(REVISION_LABEL) != str(keep_revision)  # noqa: SLF001
        ]
        await asyncio.gather(
            *(self._ignore_gone(container.delete(force=True, v=True)) for container in doomed)
        )

    async def logs_tail(self, container_id: str, lines: int) -> list[str]:
        """The last ``lines`` lines the container wrote (stdout and stderr)."""
        try:
            chunks = await self._docker.containers.container(container_id).log(
                stdout=True, stderr=True, tail=lines
            )
        except DockerError:
            return []
        return [line for chunk in chunks for line in chunk.splitlines() if line.strip()]

    async def follow_logs(self, container_id: str, *, since: int) -> AsyncIterator[str]:
        """Lines the container writes from ``since`` (Unix seconds) on, until it stops."""
        container = await self._docker.containers.get(container_id)
        stream = container.log(stdout=True, stderr=True, follow=True, since=since)
        pending = ""
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split("\n")
            for line in complete:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending

    @staticmethod
    async def _ignore_gone(call: Awaitable[None]) -> None:
        try:
            await call
        except DockerError as exc:
            if exc.status not in {_NOT_FOUND, _NOT_MODIFIED, _CONFLICT}:
                raise


def _remaps_root(info: Mapping[str, Any]) -> bool:
    """Whether the engine maps a container's root to an unprivileged host user."""
    return any("name=userns" in option for option in info.get("SecurityOptions") or [])


def _filters(selector: Mapping[str, list[str]]) -> str:
    """The engine's ``filters`` query parameter (containers.list passes it through as is)."""
    return json.dumps(dict(selector))


#: What an engine says when a Dockerfile names an image it lacks and it tries a registry.
_REGISTRY_LOOKUP = re.compile(
    r"pull access denied|no such host|dial tcp|registry-1\.docker\.io|manifest unknown"
    r"|failed to resolve|repository does not exist|No such image",
    re.IGNORECASE,
)
REGISTRY_HINT = (
    "No image registry is reachable from here: build FROM spinup/base:bookworm (Debian 12 with"
    " python3, python3-venv, psycopg2 and redis; `python3 -m venv /venv` gives a pip) and copy"
    " what else the app needs into its build context (GET /llms.txt, 'Deploy an app')."
)


def with_registry_hint(message: str) -> str:
    """``message``, and what to do instead when it is a registry lookup that cannot work here."""
    if _REGISTRY_LOOKUP.search(message):
        return f"{message}. {REGISTRY_HINT}"
    return message


def _docker_message(exc: DockerError) -> str:
    message = exc.message
    if isinstance(message, dict):
        return str(message.get("message", message))
    return str(message)


def _state_of(inspected: Mapping[str, Any]) -> ContainerState:
    state = inspected.get("State") or {}
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    ports = (inspected.get("NetworkSettings") or {}).get("Ports") or {}
    host_port: int | None = None
    for bindings in ports.values():
        for binding in bindings or []:
            if binding.get("HostIp") in {"127.0.0.1", ""} and binding.get("HostPort"):
                host_port = int(binding["HostPort"])
                break
    return ContainerState(
        container_id=str(inspected.get("Id", "")),
        service=str(labels.get(SERVICE_LABEL, "")),
        revision=int(labels.get(REVISION_LABEL, "0") or 0),
        running=bool(state.get("Running")) and not bool(state.get("Restarting")),
        restarts=int(inspected.get("RestartCount", 0) or 0),
        exit_code=int(state.get("ExitCode", 0) or 0),
        error=str(state.get("Error", "") or ""),
        host_port=host_port,
    )
