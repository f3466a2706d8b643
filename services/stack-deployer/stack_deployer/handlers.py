"""The commands stack-deployer answers: the lifecycle's, with a deploy after each create."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.contracts.kinds import ResourceKind
from shared.contracts.subjects import ENDPOINTS, STACK_CONTROL

if TYPE_CHECKING:
    from shared.bus import Bus
    from shared.contracts.commands import ProvisionResource
    from shared.contracts.replies import ResourceProvisioned
    from shared.lifecycle import ResourceLifecycle
    from stack_deployer.deploy import Deployer

# Handlers waiting for a slot or a reply; beyond this, messages wait in NATS.
MAX_IN_FLIGHT = 64


async def register(bus: Bus, lifecycle: ResourceLifecycle, deployer: Deployer) -> None:
    """Subscribe every handler in the ``stack-deployer`` queue group."""
    endpoints = ENDPOINTS[ResourceKind.STACK]

    async def provision(command: ProvisionResource) -> ResourceProvisioned:
        reply = await lifecycle.provision(command)
        # Also on a replayed reply: a deploy that never began (worker died) begins now.
        deployer.after_provision(command.resource_id, command.command_id, command.correlation_id)
        return reply

    await bus.serve(endpoints.provision, provision, max_in_flight=MAX_IN_FLIGHT)
    await bus.serve(endpoints.deprovision, lifecycle.deprovision, max_in_flight=MAX_IN_FLIGHT)
    await bus.serve(endpoints.claim, lifecycle.claim, max_in_flight=MAX_IN_FLIGHT)
    await bus.serve(endpoints.rotate, lifecycle.rotate, max_in_flight=MAX_IN_FLIGHT)
    await bus.serve(endpoints.sweep_usage, lifecycle.sweep_usage, max_in_flight=1)
    await bus.serve(endpoints.find_due, lifecycle.find_due, max_in_flight=MAX_IN_FLIGHT)
    await bus.serve(STACK_CONTROL, deployer.control, max_in_flight=MAX_IN_FLIGHT)
    # The server has the subscriptions once this returns: a worker reported ready answers.
    await bus.flush()
