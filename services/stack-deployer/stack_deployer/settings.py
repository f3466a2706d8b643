"""stack-deployer settings, read from the environment in ``main``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import Env
from shared.worker import WorkerSettings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker needs; required values have no default."""

    worker: WorkerSettings
    #: The engine's API (``unix:///var/run/docker.sock``).
    docker_host: str
    #: Label value on everything this deployment makes (``io.spinup.scope``).
    scope: str
    #: The image examples build ``FROM``; it must be on the engine (nothing is pulled).
    base_image: str
    #: Where the gateway serves tenant content (ADR 0067): a stack's services are under
    #: ``/apps/<id>/`` there.
    content_url: str
    #: A deploy whose builds and starts take longer fails; the reaper's recovery waits this long.
    build_timeout_s: float
    #: After every container started, how long they must keep running to count as started.
    settle_s: float
    #: Image builds running at once on this replica (each uses a core while it runs).
    max_parallel_builds: int
    #: Seconds a container gets to stop on SIGTERM before it is killed.
    stop_timeout_s: int
    #: When the backing servers listen on the engine's own host (development), the name
    #: containers reach that host by: loopback addresses in injected URLs become this name,
    #: mapped to the engine's host gateway. Empty: injected URLs are used as they are.
    loopback_alias: str
    #: How often the egress rules are checked and whatever is missing is put back.
    firewall_check_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the missing or malformed variable.
        """
        env = Env(environ)
        return cls(
            worker=WorkerSettings.from_env(
                env,
                prefix="STACK",
                # A create makes one network; the build runs afterwards, bounded on its own.
                create_concurrency=8,
                delete_concurrency=4,
            ),
            docker_host=env.string("DOCKER_HOST", "unix:///var/run/docker.sock"),
            scope=env.string("SPINUP_STACK_SCOPE"),
            base_image=env.string("SPINUP_STACK_BASE_IMAGE"),
            content_url=env.string("SPINUP_CONTENT_URL").rstrip("/"),
            build_timeout_s=env.number("SPINUP_STACK_BUILD_TIMEOUT_S", 600.0),
            settle_s=env.number("SPINUP_STACK_SETTLE_S", 3.0),
            max_parallel_builds=env.integer("SPINUP_STACK_MAX_PARALLEL_BUILDS", 2),
            stop_timeout_s=env.integer("SPINUP_STACK_STOP_TIMEOUT_S", 5),
            loopback_alias=environ.get("SPINUP_STACK_LOOPBACK_ALIAS", "").strip(),
            firewall_check_s=env.number("SPINUP_STACK_FIREWALL_CHECK_S", 5.0),
        )
