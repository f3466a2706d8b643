"""The stack as a resource: the lifecycle's create and delete, and what a stack has no use for.

``create`` checks the stored upload, makes the stack's network and answers the public URLs; the
deploy itself runs afterwards (``Deployer.after_provision``). ``delete`` removes everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts.kinds import ResourceKind, StackCredentials, StackLimits
from shared.contracts.stacks import public_url

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from stack_deployer.deploy import Deployer
    from stack_deployer.engine import Engine
    from stack_deployer.jetstream import Uploads


class StackDriver:
    """``ResourceDriver[StackLimits]`` over the container engine."""

    def __init__(
        self, engine: Engine, uploads: Uploads, deployer: Deployer, *, public_base: str
    ) -> None:
        self._engine = engine
        self._uploads = uploads
        self._deployer = deployer
        self._public_base = public_base

    @property
    def kind(self) -> ResourceKind:
        """Stacks."""
        return ResourceKind.STACK

    async def _credentials(self, resource_id: UUID) -> StackCredentials:
        manifest = await self._uploads.manifest(resource_id)
        urls = {
            name: public_url(self._public_base, resource_id, name)
            for name, service in manifest.services.items()
            if service.port is not None
        }
        return StackCredentials(urls=urls)

    async def create(self, resource_id: UUID, limits: StackLimits) -> StackCredentials:  # noqa: ARG002  (applied per container at deploy)
        """Check the upload is there, make the network, answer the public URLs."""
        credentials = await self._credentials(resource_id)
        await self._engine.ensure_network(str(resource_id))
        return credentials

    async def delete(self, resource_id: UUID) -> None:
        """Remove containers, network, images, upload and logs (idempotent)."""
        await self._deployer.teardown(resource_id)

    async def set_limits(self, resource_id: UUID, limits: StackLimits) -> None:
        """A claim: the new limits apply from the next deploy (they are read from the log)."""

    async def rotate(self, resource_id: UUID, limits: StackLimits) -> StackCredentials:  # noqa: ARG002
        """A stack's credentials are its public URLs: nothing secret to rotate."""
        return await self._credentials(resource_id)

    async def usage(
        self,
        resource_ids: Sequence[UUID],  # noqa: ARG002
        *,
        sweep_id: UUID | None = None,  # noqa: ARG002
    ) -> dict[UUID, int]:
        """Stacks have no storage quota (their data lives in the backing resources)."""
        return {}

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """No quota, nothing to block."""

    async def allow_writes(self, resource_id: UUID) -> None:
        """No quota, nothing to allow."""
