"""One NATS account per tenant on the customer NATS (operator mode, full resolver).

Why care: this module deletes accounts, and deleting an account closes every connection of it.
The account key is derived from the resource id (HKDF-SHA256 keyed with the operator seed), so
the driver stores nothing: create twice gives the same account, and delete finds the account
from the resource id alone. A delete passes ``guard_tenant_name`` and refuses the system
account. Limits live in the account JWT and the server enforces them (connections, JetStream
streams, consumers, storage, payload).

The account JWT is pushed with ``$SYS.REQ.CLAIMS.UPDATE``; a delete is an operator-signed generic
claim on ``$SYS.REQ.CLAIMS.DELETE`` (the resolver needs ``allow_delete``). Known cost, nothing to
fix yet: every reconnect attempt of a deleted account's client costs the server a resolver fetch
that times out after 1.9 s (``Account fetch failed: fetching jwt timed out`` in its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError

from shared import natsjwt
from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import NatsCredentials, NatsLimits, ResourceKind
from shared.naming import guard_tenant_name, tenant_name

if TYPE_CHECKING:
    from pathlib import Path
    from uuid import UUID

log = structlog.get_logger("queue_provisioner.driver")

MIB = 1024 * 1024
KIB = 1024
_OK = 200
_RECONNECT_POLL_S = 0.05
_UPDATE_SUBJECT = "$SYS.REQ.CLAIMS.UPDATE"
_DELETE_SUBJECT = "$SYS.REQ.CLAIMS.DELETE"
_LOOKUP_SUBJECT = "$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"
# Versioned, so a future change of the derivation cannot silently collide with today's keys.
_ACCOUNT_KEY_INFO = b"spinup/nats-account/v1/"
_UNREACHABLE = (
    NatsTimeoutError,
    NoRespondersError,
    ConnectionClosedError,
    OutboundBufferLimitError,
    TimeoutError,
    OSError,
)


def account_limits(limits: NatsLimits) -> natsjwt.AccountLimits:
    """The account JWT limits for a plan's NATS limits (sizes in bytes, JetStream on)."""
    return natsjwt.AccountLimits(
        connections=limits.connections,
        # No leaf node listener exists, and a tenant has no business bridging servers.
        leaf_connections=0,
        payload_bytes=limits.max_payload_kb * KIB,
        streams=limits.streams,
        consumers=limits.consumers,
        memory_storage_bytes=limits.memory_storage_mb * MIB,
        disk_storage_bytes=limits.disk_storage_mb * MIB,
        # Every stream must declare its size, so one stream cannot take the whole quota unasked.
        max_bytes_required=True,
    )


class NatsAccountDriver:
    """Creates and deletes tenant accounts through a system-account connection."""

    kind = ResourceKind.NATS

    def __init__(
        self,
        system: NatsClient,
        *,
        operator: natsjwt.NKey,
        system_account: str,
        public_url: str,
        request_timeout: float,
    ) -> None:
        self._system = system
        self._operator = operator
        self._system_account = system_account
        self._public_url = public_url
        self._timeout = request_timeout

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        system_creds: Path,
        operator_seed: str,
        public_url: str,
        request_timeout: float,
        name: str,
    ) -> NatsAccountDriver:
        """Connect as the system user; afterwards the client reconnects on its own forever.

        Raises:
            BackendUnavailableError: the server did not accept the connection in time.
        """
        creds = await asyncio.to_thread(system_creds.read_text)
        # The SYS user is issued by the system account: its key is what delete must never hit.
        system_account = str(natsjwt.decode_jwt(natsjwt.jwt_of_creds(creds))["iss"])

        async def quiet(exc: Exception) -> None:
            # nats-py's default prints a traceback per failed reconnect; one line is enough.
            log.info("queue_provisioner.customer_nats.error", error=type(exc).__name__)

        async def disconnected() -> None:
            log.info("queue_provisioner.customer_nats.disconnected")

        async def reconnected() -> None:
            log.info("queue_provisioner.customer_nats.reconnected")

        # With unlimited reconnects nats-py also retries the first connect forever: bound it, so
        # start-up (connect_with_retry) sees a failure and says what it waits for.
        try:
            client: NatsClient = await asyncio.wait_for(
                nats.connect(
                    url,
                    name=name,
                    user_credentials=str(system_creds),
                    error_cb=quiet,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                ),
                timeout=request_timeout * 3,
            )
        except (*_UNREACHABLE, nats.errors.Error) as exc:
            msg = "The NATS server for tenant accounts is unreachable."
            raise BackendUnavailableError(msg) from exc
        return cls(
            client,
            operator=natsjwt.NKey.from_seed(operator_seed),
            system_account=system_account,
            public_url=public_url,
            request_timeout=request_timeout,
        )

    async def close(self) -> None:
        """Close the system connection."""
        await self._system.close()

    def account_key(self, resource_id: UUID) -> natsjwt.NKey:
        """The tenant's account key: always the same for one resource id."""
        return natsjwt.NKey.derive(
            self._operator.seed.encode(),
            _ACCOUNT_KEY_INFO + resource_id.bytes,
            natsjwt.KeyKind.ACCOUNT,
        )

    async def _connected(self) -> bool:
        """Whether the system connection is up, waiting up to one request timeout for it.

        Right after a server restart the client is still in its reconnect back-off: a short
        wait turns that blip into a success instead of a 503.
        """
        deadline = asyncio.get_running_loop().time() + self._timeout
        while not self._system.is_connected:
            if self._system.is_closed or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(_RECONNECT_POLL_S)
        return True

    @contextlib.asynccontextmanager
    async def _backend_errors(self, action: str) -> AsyncIterator[None]:
        if not await self._connected():
            msg = f"The NATS server for tenant accounts is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg)
        try:
            yield
        except _UNREACHABLE as exc:
            msg = f"The NATS server for tenant accounts is unreachable; nothing was {action}."
            raise BackendUnavailableError(msg) from exc

    async def _system_request(self, subject: str, payload: str, action: str) -> dict[str, Any]:
        """Send a claims request; return the server's ``data`` or raise its error."""
        async with self._backend_errors(action):
            reply = await self._system.request(subject, payload.encode(), timeout=self._timeout)
        try:
            body = json.loads(reply.data)
        except ValueError:
            body = {}
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and data.get("code") == _OK:
            return data
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        log.warning("queue_provisioner.backend.refused", subject=subject, code=code)
        msg = f"NATS refused the account change (code {code}); nothing was {action}."
        raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    async def create(self, resource_id: UUID, limits: NatsLimits) -> NatsCredentials:
        """Push (or refresh) the tenant's account JWT, then mint a fresh user for it."""
        name = tenant_name(resource_id)
        account = self.account_key(resource_id)
        token = natsjwt.account_jwt(
            account.public_key, self._operator, name=name, limits=account_limits(limits)
        )
        await self._system_request(_UPDATE_SUBJECT, token, "created")
        user = natsjwt.NKey.generate(natsjwt.KeyKind.USER)
        user_token = natsjwt.user_jwt(user.public_key, account, name=name)
        return NatsCredentials(
            connection_url=self._public_url,
            account=account.public_key,
            user_jwt=user_token,
            user_seed=user.seed,
            creds=natsjwt.creds_file(user_token, user.seed),
        )

    async def delete(self, resource_id: UUID) -> None:
        """Delete the tenant's account (closing its connections); a missing one is fine.

        Raises:
            DropRefusedError: the derived key is the system account (never expected).
        """
        guard_tenant_name(tenant_name(resource_id))
        account = self.account_key(resource_id).public_key
        if account == self._system_account:
            msg = "refusing to delete the system account"
            raise DropRefusedError(msg)
        claim = natsjwt.delete_accounts_claim(self._operator, [account])
        await self._system_request(_DELETE_SUBJECT, claim, "deleted")

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the resolver holds this resource's account JWT (for sweeps and tests)."""
        account = self.account_key(resource_id).public_key
        async with self._backend_errors("checked"):
            reply = await self._system.request(
                _LOOKUP_SUBJECT.format(account=account), b"", timeout=self._timeout
            )
        return bool(reply.data)
