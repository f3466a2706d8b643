"""The local development stack: real Postgres, Redis and NATS servers plus the Spinup services.

``make run`` runs ``python -m devstack run``; tests use ``Stack.for_tests``. Standard library
only, so ``python3 -m devstack clean`` works without the virtualenv.
"""

from devstack.procs import DevstackError
from devstack.profile import Ports, Profile, Secrets
from devstack.services import ServiceProcess
from devstack.stack import Progress, Stack

__all__ = [
    "DevstackError",
    "Ports",
    "Profile",
    "Progress",
    "Secrets",
    "ServiceProcess",
    "Stack",
]
