"""One NATS account per tenant on the customer NATS (operator mode, full resolver).

Why care: this module deletes accounts, and deleting an account closes every connection of it.
The account key is derived from the resource id (HKDF-SHA256 keyed with the operator seed), so
the driver stores nothing: create twice gives the same account, and every operation finds the
account from the resource id alone. Every change passes ``guard_tenant_name`` and refuses the
system account. Limits live in the account JWT and the server enforces them (connections,
JetStream streams, consumers, storage, payload).

The account JWT is pushed with ``$SYS.REQ.CLAIMS.UPDATE``; a delete is an operator-signed generic
claim on ``$SYS.REQ.CLAIMS.DELETE`` (the resolver needs ``allow_delete``), then a purge of the
account's streams, which the claim delete alone leaves on disk (docs/backends.md). Known cost,
nothing to fix yet: every reconnect attempt of a deleted account's client costs the server a
resolver fetch that times out after 1.9 s (``Account fetch failed: fetching jwt timed out`` in its
log).

Users are not stored either: issuing one (create, rotate) revokes every earlier user of the
account with a ``"*"`` revocation in the account JWT, which the server applies to new logins and
open connections alike. A revocation covers users whose ``iat`` is at or before its time, in
whole seconds, so the new user is issued one second after it (``_revocation_time``); changing
limits keeps the revocation the resolver holds.

Quotas need no help from here: JetStream refuses a stream whose ``max_bytes`` does not fit in the
account's storage, a write past a full stream's ``max_bytes``, and a write to any stream (sized or
not) once the account's storage is full, so ``block_writes`` has nothing to add (see its
docstring).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.contracts.errors import (
    BackendUnavailableError,
    DropRefusedError,
    ErrorCode,
    SpinupError,
)
from shared.contracts.kinds import (
    EXPORT_FORMATS,
    NatsCredentials,
    NatsLimits,
    ResourceKind,
)
from shared.crypto import natsjwt
from shared.exporting import chunked
from shared.lifecycle import Ceiling
from shared.naming import guard_tenant_name, tenant_name, tenant_resource_id
from shared.observability.metrics import USAGE_MEASURED, USAGE_MEASURES, USAGE_STANDING
from shared.usage_memo import UsageMemo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path
    from uuid import UUID

log = structlog.get_logger("queue_provisioner.driver")
_T = TypeVar("_T")

MIB = 1024 * 1024
KIB = 1024
_OK = 200
_RECONNECT_POLL_S = 0.05
_UPDATE_SUBJECT = "$SYS.REQ.CLAIMS.UPDATE"
_DELETE_SUBJECT = "$SYS.REQ.CLAIMS.DELETE"
_LOOKUP_SUBJECT = "$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"
#: JetStream's removal of every stream of an account, from the system account: what deleting the
#: account's JWT leaves on the server's disk (``{"initiated": true}`` or ``{"error": {...}}``).
_PURGE_SUBJECT = "$JS.API.ACCOUNT.PURGE.{account}"
#: The full resolver's list of every account it holds: ``{"data": [<account key>, ...]}``.
_LIST_SUBJECT = "$SYS.REQ.CLAIMS.LIST"
_JSZ_SUBJECT = "$SYS.REQ.ACCOUNT.{account}.JSZ"
#: Every server's VARZ (nats-server's ``Varz``); the first answer is taken (one server here).
_VARZ_SUBJECT = "$SYS.REQ.SERVER.PING.VARZ"
#: One server's JSZ (nats-server's ``JSInfo``), by the id its VARZ answer gave.
_SERVER_JSZ_SUBJECT = "$SYS.REQ.SERVER.{server}.JSZ"
#: How long the JetStream reservations ``capacity`` read stand before it reads them again.
RESERVATIONS_EVERY_S = 60.0
#: JSZ's page of account details (1,024 unless asked): more than a server ever holds.
_EVERY_ACCOUNT = 1 << 30
#: Above it, a JSZ reservation is an account limit of -1 (unlimited) sent as a uint64.
_INT64_MAX = (1 << 63) - 1
#: What a purge of a deleted account may wait first: the server asks its resolver for the JWT,
#: and the resolver waits out its fetch timeout (1.9 s in every config here) before giving up.
_RESOLVER_FETCH_WAIT_S = 5.0
#: JSZ's answer for an account the server has not loaded (nats-server's ``JszAccount``).
_NOT_LOADED = 'account "{account}" not found'
# Requests of one usage call in flight at once: enough to pipeline, few enough that the last
# is answered well within the request timeout.
_MAX_IN_FLIGHT = 64
# About 300 bytes each: every account a sweep measures stays cached, within a few MB.
_ACCOUNT_KEYS_CACHED = 16384
# Versioned, so a future change of the derivation cannot silently collide with today's keys.
_ACCOUNT_KEY_INFO = b"spinup/nats-account/v1/"
#: Messages asked for at once during an export (memory: this many messages at most).
_EXPORT_WINDOW = 16
_D = TypeVar("_D")
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
        # nats-server applies an account's subscription limit to each of its connections.
        subscriptions=limits.subscriptions_per_connection,
        # No leaf node listener exists, and a tenant has no business bridging servers.
        leaf_connections=0,
        payload_bytes=limits.max_payload_kb * KIB,
        streams=limits.streams,
        consumers=limits.consumers,
        memory_storage_bytes=limits.memory_storage_mb * MIB,
        disk_storage_bytes=limits.disk_storage_mb * MIB,
        # A stream need not declare its size (ADR 0025): ``add_stream(name, subjects)`` as every
        # client README writes it. An unsized stream reserves nothing and its writes stop where
        # the account's storage ends, so one stream may use the whole quota, never more.
        max_bytes_required=False,
    )


class _Server(msgspec.Struct):
    id: str


class _Refusal(msgspec.Struct):
    code: int = 0
    description: str = ""


class _Monitored(msgspec.Struct, Generic[_D]):
    """A server's answer to a ``$SYS.REQ.SERVER`` request (nats-server's ``ServerAPIResponse``)."""

    server: _Server
    data: _D | None = None
    error: _Refusal | None = None


class _Varz(msgspec.Struct):
    connections: int
    max_connections: int


class _JetStreamConfig(msgspec.Struct):
    max_memory: int
    max_storage: int


class _Reservations(msgspec.Struct):
    """JetStream bytes held for later (``reserved_*``): by a server, or an account's limits."""

    reserved_memory: int = 0
    reserved_storage: int = 0


class _Jsz(_Reservations):
    """A server's JetStream: its own ``reserved_*`` are its sized streams' ``max_bytes``."""

    disabled: bool = False
    config: _JetStreamConfig | None = None
    #: Every account with JetStream enabled: its ``reserved_*`` are its limits.
    account_details: list[_Reservations] = []


_VARZ_ANSWER = msgspec.json.Decoder(_Monitored[_Varz])
_JSZ_ANSWER = msgspec.json.Decoder(_Monitored[_Jsz])


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
        measures: UsageMemo | None = None,
        reservations_every_s: float = RESERVATIONS_EVERY_S,
    ) -> None:
        """``measures``: what the usage sweep remembers of its lookups (``shared.usage_memo``).

        ``reservations_every_s``: how long ``capacity``'s JetStream reservations stand.
        """
        self._system = system
        self._operator = operator
        self._system_account = system_account
        self._public_url = public_url
        self._timeout = request_timeout
        self._measures = UsageMemo() if measures is None else measures
        self._reservations_every_s = reservations_every_s
        #: When ``capacity`` last asked for the JetStream reservations, and what they were.
        self._reservations: tuple[float, dict[Ceiling, tuple[int, int]]] | None = None
        #: Accounts ``tenants`` has named, and their resources (a name never changes).
        self._named: dict[str, UUID] = {}

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
        measures: UsageMemo | None = None,
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
            measures=measures,
        )

    async def close(self) -> None:
        """Close the system connection."""
        await self._system.close()

    def account_key(self, resource_id: UUID) -> natsjwt.NKey:
        """The tenant's account key: always the same for one resource id."""
        return _derived_account_key(self._operator.seed, resource_id)

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
        unreachable = f"The NATS server for tenant accounts is unreachable; nothing was {action}."
        if not await self._connected():
            raise BackendUnavailableError(unreachable)
        try:
            yield
        except _UNREACHABLE as exc:
            raise BackendUnavailableError(unreachable) from exc

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

    def _tenant_account(self, resource_id: UUID) -> natsjwt.NKey:
        """The account an operation may change: a tenant's, never the system account.

        Raises:
            DropRefusedError: the derived key is the system account (never expected).
        """
        guard_tenant_name(tenant_name(resource_id))
        account = self.account_key(resource_id)
        if account.public_key == self._system_account:
            msg = "refusing to change the system account"
            raise DropRefusedError(msg)
        return account

    async def _resolver_jwt(self, account: str, action: str) -> bytes:
        """The account JWT the resolver holds, empty when it holds none."""
        async with self._backend_errors(action):
            reply = await self._system.request(
                _LOOKUP_SUBJECT.format(account=account), b"", timeout=self._timeout
            )
        return bytes(reply.data)

    async def _account_claims(self, account: str, action: str) -> dict[str, Any] | None:
        """The claims of the account JWT the resolver holds, or None when it holds none."""
        token = await self._resolver_jwt(account, action)
        if not token:
            return None
        try:
            return natsjwt.decode_jwt(token.decode(), issuer=self._operator.public_key)
        except (natsjwt.NatsJwtError, UnicodeDecodeError) as exc:
            log.warning("queue_provisioner.backend.foreign_account_jwt", account=account)
            msg = (
                "The NATS server holds an account JWT this platform did not sign;"
                f" nothing was {action}."
            )
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc

    async def _existing_claims(self, account: str, action: str) -> dict[str, Any]:
        claims = await self._account_claims(account, action)
        if claims is None:
            msg = f"This NATS account does not exist (it was deleted); nothing was {action}."
            raise SpinupError(ErrorCode.NOT_FOUND, msg)
        return claims

    async def _issue_user(
        self,
        resource_id: UUID,
        limits: NatsLimits,
        current: dict[str, Any] | None,
        action: str,
    ) -> NatsCredentials:
        """Push the account JWT revoking every user so far, then mint one issued after that."""
        name = tenant_name(resource_id)
        account = self._tenant_account(resource_id)
        revoked_through = _revocation_time(current, action)
        token = natsjwt.account_jwt(
            account.public_key,
            self._operator,
            name=name,
            limits=account_limits(limits),
            revocations={natsjwt.ALL_USERS: revoked_through},
        )
        await self._system_request(_UPDATE_SUBJECT, token, action)
        user = natsjwt.NKey.generate(natsjwt.KeyKind.USER)
        user_token = natsjwt.user_jwt(
            user.public_key, account, name=name, issued_at=revoked_through + 1
        )
        return NatsCredentials(
            connection_url=self._public_url,
            account=account.public_key,
            user_jwt=user_token,
            user_seed=user.seed,
            creds=natsjwt.creds_file(user_token, user.seed),
        )

    async def tenants(self) -> set[UUID]:
        """Every resource with an account on the server (``ResourceLifecycle.reconcile``).

        The resolver lists account keys, which derive from resource ids one way; each account's
        JWT names its tenant. An account not seen before is looked up once, and kept only if
        its name derives its key (so only this platform's accounts are ever named).
        """
        async with self._backend_errors("listed"):
            reply = await self._system.request(_LIST_SUBJECT, b"", timeout=self._timeout)
        try:
            listed = json.loads(reply.data).get("data")
        except (ValueError, AttributeError):
            listed = None
        if not isinstance(listed, list):
            msg = "The NATS resolver did not list its accounts; nothing was listed."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)
        accounts = {a for a in listed if isinstance(a, str) and a != self._system_account}
        unknown = sorted(accounts - self._named.keys())
        found = await _in_flight(lambda account: self._account_claims(account, "listed"), unknown)
        for account, claims in zip(unknown, found, strict=True):
            resource_id = tenant_resource_id(str((claims or {}).get("name", "")))
            if resource_id is not None and self.account_key(resource_id).public_key == account:
                self._named[account] = resource_id
        self._named = {a: rid for a, rid in self._named.items() if a in accounts}
        return set(self._named.values())

    async def create(self, resource_id: UUID, limits: NatsLimits) -> NatsCredentials:
        """Push (or refresh) the tenant's account JWT, then mint a fresh user for it.

        Again on an existing account: the new limits, a new user, and the earlier users revoked
        (their credentials were never handed out, or are being replaced).
        """
        account = self._tenant_account(resource_id).public_key
        current = await self._account_claims(account, "created")
        return await self._issue_user(resource_id, limits, current, "created")

    async def create_fresh(self, resource_id: UUID, limits: NatsLimits) -> NatsCredentials:
        """``create`` for an id no account was ever made for: no JWT to look up first."""
        return await self._issue_user(resource_id, limits, None, "created")

    async def set_limits(self, resource_id: UUID, limits: NatsLimits) -> None:
        """Re-issue the account JWT with ``limits``; users, connections and data stay.

        The server applies the new JWT to open connections at once (a lower connection limit
        would close the newest ones). The revocations the resolver holds are kept, so rotated
        credentials stay dead.

        Raises:
            SpinupError: NOT_FOUND when the account does not exist.
        """
        name = tenant_name(resource_id)
        account = self._tenant_account(resource_id)
        current = await self._existing_claims(account.public_key, "changed")
        try:
            revocations = natsjwt.revocations_of(current)
        except natsjwt.NatsJwtError as exc:
            msg = "The NATS account's revocations are unreadable; nothing was changed."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc
        token = natsjwt.account_jwt(
            account.public_key,
            self._operator,
            name=name,
            limits=account_limits(limits),
            revocations=revocations,
        )
        await self._system_request(_UPDATE_SUBJECT, token, "changed")

    async def rotate(self, resource_id: UUID, limits: NatsLimits) -> NatsCredentials:
        """A new user; every earlier one is refused at login and its connections are closed.

        The account, its connection URL and its streams stay.

        Raises:
            SpinupError: NOT_FOUND when the account does not exist.
        """
        account = self._tenant_account(resource_id).public_key
        current = await self._existing_claims(account, "rotated")
        return await self._issue_user(resource_id, limits, current, "rotated")

    async def usage(
        self,
        resource_ids: Sequence[UUID],
        *,
        sweep_id: UUID | None = None,  # noqa: ARG002 (one measure serves any page)
    ) -> dict[UUID, int]:
        """JetStream bytes (file + memory) each account stores, as the server counts them.

        One JSZ request per account, all in flight at once on the system connection (one round
        trip of waiting). A server-wide JSZ would be one message per 1,024 loaded accounts, but
        the server walks every loaded account for each, and every page of a sweep would need all
        of them. An account the server has not loaded (no connection or stream
        since it started) stores nothing: a resolver lookup tells it (0) from a missing one
        (left out). That 0 stands without the lookup while this worker found the account's JWT
        within the hour (``shared.usage_memo``, with no figures: only a connection loads the
        account, and JSZ answers for it then; ADR 0059).
        """
        accounts = {rid: self.account_key(rid).public_key for rid in resource_ids}
        measured = await _in_flight(self._stored_bytes, list(accounts.values()))
        usage = {
            rid: stored
            for rid, stored in zip(accounts, measured, strict=True)
            if stored is not None
        }
        unloaded = [rid for rid in accounts if rid not in usage]
        standing = {
            rid: stood
            for rid in unloaded
            if (stood := self._measures.standing(accounts[rid], None)) is not None
        }
        looked_up = [rid for rid in unloaded if rid not in standing]
        held = await _in_flight(self._held_for_usage, [accounts[rid] for rid in looked_up])
        for rid, jwt in zip(looked_up, held, strict=True):
            if jwt:
                self._measures.measured(accounts[rid], None, 0)
                usage[rid] = 0
            else:
                self._measures.forget(accounts[rid])
        USAGE_MEASURES.labels(self.kind.value, USAGE_STANDING).inc(len(standing))
        USAGE_MEASURES.labels(self.kind.value, USAGE_MEASURED).inc(len(usage))
        return usage | standing

    async def _held_for_usage(self, account: str) -> bytes:
        return await self._resolver_jwt(account, "measured")

    async def _stored_bytes(self, account: str) -> int | None:
        """File + memory bytes of one account, or None when JetStream does not know it."""
        data = (await self._jsz(account, "measured")).get("data")
        if not isinstance(data, dict):
            # "account not found" (not loaded, or no such account) or "not jetstream enabled".
            return None
        return int(data.get("storage", 0)) + int(data.get("memory", 0))

    async def capacity(self) -> dict[Ceiling, tuple[int, int]]:
        """Connections against ``max_connections``; JetStream reserved against the server's store.

        Past ``max_connections`` the server refuses every new connection, a tenant's first too.
        The JetStream ceilings are ``max_memory_store`` and ``max_file_store``: a standalone
        server reserves an account's JetStream limits as it enables JetStream for it (its first
        connection; until the account is deleted) and refuses JetStream to an account whose
        limits do not fit beside those reserved (10047; ADR 0050), and the create never hears of
        it. Sized streams' ``max_bytes`` are reserved too, and checked apart: the figure is the
        larger of the two reservations, which is what the next account's limits are added to.

        VARZ from the first server to answer, at every call; then, at most once in
        ``reservations_every_s``, that server's JSZ with every JetStream account's limits (its
        JSZ walks them all anyway), whose figures stand until the next. That answer is about 270
        bytes an account: 3.5 MB at the dev stack's 13,107 anonymous tenants, too much for every
        10 s probe, and a reservation an alert waits ten minutes on needs no fresher figure. A
        server without JetStream reports no JetStream ceilings.
        """
        server, varz = await self._monitored(_VARZ_SUBJECT, {}, _VARZ_ANSWER)
        figures = {Ceiling.CONNECTIONS: (varz.connections, varz.max_connections)}
        now = time.monotonic()
        if self._reservations is None or now - self._reservations[0] >= self._reservations_every_s:
            self._reservations = (now, await self._reserved(server))
        return figures | self._reservations[1]

    async def _reserved(self, server: str) -> dict[Ceiling, tuple[int, int]]:
        """``capacity``'s JetStream figures, from the JSZ of the server with this id."""
        options = {"accounts": True, "limit": _EVERY_ACCOUNT}
        _, jsz = await self._monitored(
            _SERVER_JSZ_SUBJECT.format(server=server), options, _JSZ_ANSWER
        )
        figures: dict[Ceiling, tuple[int, int]] = {}
        if jsz.disabled or jsz.config is None:
            return figures
        # Each account's detail reports its limits as its reservation.
        memory = sum(_counted(a.reserved_memory) for a in jsz.account_details)
        storage = sum(_counted(a.reserved_storage) for a in jsz.account_details)
        figures[Ceiling.JETSTREAM_MEMORY_RESERVED_BYTES] = (
            max(jsz.reserved_memory, memory),
            jsz.config.max_memory,
        )
        figures[Ceiling.JETSTREAM_STORAGE_RESERVED_BYTES] = (
            max(jsz.reserved_storage, storage),
            jsz.config.max_storage,
        )
        return figures

    async def _monitored(
        self,
        subject: str,
        options: dict[str, Any],
        answer: msgspec.json.Decoder[_Monitored[_D]],
    ) -> tuple[str, _D]:
        """A server's monitoring figures (``$SYS.REQ.SERVER``) and its id, or its refusal."""
        async with self._backend_errors("checked"):
            reply = await self._system.request(
                subject, json.dumps(options).encode(), timeout=self._timeout
            )
        try:
            monitored = answer.decode(reply.data)
        except msgspec.MsgspecError:
            monitored = None
        if monitored is not None and monitored.data is not None:
            return monitored.server.id, monitored.data
        code = monitored.error.code if monitored is not None and monitored.error else None
        log.warning("queue_provisioner.backend.refused", subject=subject, code=code)
        msg = f"NATS did not report its figures (code {code}); nothing was checked."
        raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    async def block_writes(self, resource_id: UUID, *, usage: int, quota: int) -> None:
        """Nothing to do: the NATS server already refuses writes past the account's storage.

        The server refuses a stream whose declared size does not fit in what the account has
        left, a write past a full stream's size (``discard: new``, or it drops the oldest
        messages with ``discard: old``), and any write, to a sized or an unsized stream, that
        would take the account past its storage. Stored bytes never exceed the quota, for open
        connections too; reads and deletes work.
        """

    async def allow_writes(self, resource_id: UUID) -> None:
        """Nothing to undo: ``block_writes`` changes nothing (the server enforces the quota)."""

    async def delete(self, resource_id: UUID) -> None:
        """Delete the tenant's account (closing its connections) and its data; none is fine.

        Raises:
            DropRefusedError: the derived key is the system account (never expected).
        """
        account = self._tenant_account(resource_id).public_key
        self._measures.forget(account)
        # Without a JWT it was deleted already (or never made): the claim delete alone is repeated.
        held = bool(await self._resolver_jwt(account, "deleted"))
        # An account the server has not loaded since it started stores nothing (the server loads
        # every account with a store directory at start), and a purge would load it into memory,
        # where nats-server keeps every account it loaded until it restarts (ADR 0056).
        loaded = held and await self._loaded(account)
        if loaded:
            await self._purge_streams(account)
        await self._delete_claim(account)
        if held and not loaded and await self._loaded(account):
            # A connection came in between and may have stored something: removed all the same.
            # More than a second after the claim delete, the server would first ask its resolver
            # for the JWT (nats-server's updateAccount) and wait out the fetch timeout.
            await self._purge_streams(account, within_s=self._timeout + _RESOLVER_FETCH_WAIT_S)

    async def _delete_claim(self, account: str) -> None:
        claim = natsjwt.delete_accounts_claim(self._operator, [account])
        await self._system_request(_DELETE_SUBJECT, claim, "deleted")

    async def _loaded(self, account: str) -> bool:
        """Whether the server holds the account in memory, asked without loading it.

        A JSZ request of one account reads the server's loaded accounts only: "not found" means
        it has not loaded the account. Any other answer (its JetStream figures, "not jetstream
        enabled", an error) counts as loaded, so a delete purges whenever it cannot tell.
        """
        error = (await self._jsz(account, "deleted")).get("error")
        description = error.get("description") if isinstance(error, dict) else None
        return description != _NOT_LOADED.format(account=account)

    async def _jsz(self, account: str, action: str) -> dict[str, Any]:
        """The server's JSZ answer for one account (``data`` or ``error``); it loads none."""
        async with self._backend_errors(action):
            reply = await self._system.request(
                _JSZ_SUBJECT.format(account=account), b"", timeout=self._timeout
            )
        try:
            body = json.loads(reply.data)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _purge_streams(self, account: str, *, within_s: float | None = None) -> None:
        """Remove every stream of an account, with its data, from the server's disk.

        Deleting the JWT cuts the account off but only stops its streams: nats-server keeps their
        files (and would for ever). Purged while the JWT is still there: once it is gone, the
        server looks the account up for the purge by asking its resolver, which waits out its
        fetch timeout (1.9 s) first; ``within_s`` allows for that where ``delete`` has to. A
        stream a connection makes between the purge and the claim delete (a millisecond or two)
        is stopped, not removed.
        """
        async with self._backend_errors("deleted"):
            reply = await self._system.request(
                _PURGE_SUBJECT.format(account=account), b"", timeout=within_s or self._timeout
            )
        try:
            body = json.loads(reply.data)
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("initiated") is True:
            return
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("err_code") if isinstance(error, dict) else None
        log.warning("queue_provisioner.backend.purge_refused", account=account, code=code)
        msg = f"NATS did not remove the account's streams (code {code}); nothing was deleted."
        raise SpinupError(ErrorCode.BACKEND_ERROR, msg, retryable=True)

    # -- export and suspend (docs/adr/0030, docs/export-formats.md) ----------------------------

    async def suspend(self, resource_id: UUID) -> None:
        """At expiry: every user issued so far is revoked (new logins refused, connections cut).

        The same ``"*"`` revocation ``rotate`` pushes, without a new user: the server applies it
        to open connections at once. Limits and streams stay (the rest of the account JWT is
        pushed unchanged), so ``export`` reads them and ``delete`` removes the account later.
        Idempotent; a missing account is left missing.
        """
        name = tenant_name(resource_id)
        account = self._tenant_account(resource_id)
        current = await self._account_claims(account.public_key, "suspended")
        if current is None:
            return
        revoked_through = _revocation_time(current, "suspended")
        nats_claims = {k: v for k, v in current.get("nats", {}).items() if k != "version"}
        nats_claims["revocations"] = {
            **natsjwt.revocations_of(current),
            natsjwt.ALL_USERS: revoked_through,
        }
        token = natsjwt.encode_claims(account.public_key, nats_claims, self._operator, name=name)
        await self._system_request(_UPDATE_SUBJECT, token, "suspended")
        log.info("queue_provisioner.account.suspended", account=account.public_key)

    def export(self, resource_id: UUID, fmt: str) -> AsyncIterator[bytes]:
        """Every stream of the account, config then messages, as JSON lines (``jsonl``).

        The system account cannot read another account's JetStream, so the driver mints a
        read-only user of the account for the export (JetStream's stream list, info and message
        get; issued after the account's revocations, so it works while suspended; its seed never
        leaves this process). Messages are read by ``STREAM.MSG.GET``, ``_EXPORT_WINDOW`` in flight
        at once, up to the last sequence the stream had when its turn came: no consumer is made
        (the tenant's consumer limit stays whole), memory is one window of messages whatever the
        stream's size.
        """
        return chunked(self._export_account(resource_id, fmt))

    async def _export_account(self, resource_id: UUID, fmt: str) -> AsyncGenerator[bytes]:
        if fmt not in {f.name for f in EXPORT_FORMATS[ResourceKind.NATS]}:
            msg = "A NATS account exports as jsonl (stream configs, then their messages)."
            raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
        account = self._tenant_account(resource_id)
        current = await self._existing_claims(account.public_key, "exported")
        client = await self._export_client(resource_id, account, current)
        try:
            async for line in self._export_lines(client):
                yield line
        finally:
            await client.close()

    async def _export_client(
        self, resource_id: UUID, account: natsjwt.NKey, claims: dict[str, Any]
    ) -> NatsClient:
        try:
            revocations = natsjwt.revocations_of(claims)
        except natsjwt.NatsJwtError as exc:
            msg = "The NATS account's revocations are unreadable; nothing was exported."
            raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc
        user = natsjwt.NKey.generate(natsjwt.KeyKind.USER)
        # Read-only JetStream: list, info and get; replies come to its inbox.
        permissions = {
            "pub": {
                "allow": [
                    "$JS.API.STREAM.LIST",
                    "$JS.API.STREAM.INFO.>",
                    "$JS.API.STREAM.MSG.GET.>",
                ]
            },
            "sub": {"allow": ["_INBOX.>"]},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
        }
        token = natsjwt.encode_claims(
            user.public_key,
            permissions,
            account,
            name=f"{tenant_name(resource_id)}-export",
            issued_at=revocations.get(natsjwt.ALL_USERS, int(time.time()) - 1) + 1,
        )
        server = self._system.connected_url
        if server is None:
            msg = "The NATS server for tenant accounts is unreachable; nothing was exported."
            raise BackendUnavailableError(msg)
        try:
            return await asyncio.wait_for(
                nats.connect(
                    f"{server.scheme}://{server.hostname}:{server.port}",
                    name="queue-provisioner-export",
                    user_jwt_cb=token.encode,
                    signature_cb=lambda nonce: _sign_nonce(user, nonce),
                    allow_reconnect=False,
                    error_cb=_quiet,
                    connect_timeout=2,
                ),
                timeout=self._timeout * 3,
            )
        except (*_UNREACHABLE, nats.errors.Error) as exc:
            msg = "The NATS server refused the export's reader; nothing was exported."
            raise BackendUnavailableError(msg) from exc

    async def _js_api(self, client: NatsClient, subject: str, body: dict[str, Any]) -> Any:  # noqa: ANN401  (JSON)
        try:
            reply = await client.request(subject, json.dumps(body).encode(), timeout=self._timeout)
        except _UNREACHABLE as exc:
            msg = "The NATS server stopped answering during the export."
            raise BackendUnavailableError(msg) from exc
        return json.loads(reply.data)

    async def _export_lines(self, client: NatsClient) -> AsyncIterator[bytes]:
        offset = 0
        while True:
            page = await self._js_api(client, "$JS.API.STREAM.LIST", {"offset": offset})
            streams = page.get("streams") or []
            for stream in streams:
                config = stream["config"]
                name = config["name"]
                yield _json_line({"stream": name, "config": config})
                state = stream.get("state", {})
                first, last = int(state.get("first_seq", 1)) or 1, int(state.get("last_seq", 0))
                async for line in self._message_lines(client, name, first, last):
                    yield line
            offset += len(streams)
            if not streams or offset >= int(page.get("total", 0)):
                return

    async def _message_lines(
        self, client: NatsClient, stream: str, first: int, last: int
    ) -> AsyncIterator[bytes]:
        """Messages ``first`` to ``last`` of ``stream``, ``_EXPORT_WINDOW`` asked for at once."""
        subject = f"$JS.API.STREAM.MSG.GET.{stream}"
        seq = first
        while seq <= last:
            window = range(seq, min(seq + _EXPORT_WINDOW, last + 1))
            answers = await asyncio.gather(
                *(self._js_api(client, subject, {"seq": wanted}) for wanted in window)
            )
            found = [
                answer["message"] for answer in answers if isinstance(answer.get("message"), dict)
            ]
            for message in found:
                yield _message_line(stream, message)
            seq = window[-1] + 1
            if not found and seq <= last:
                # A run of deleted messages (a KV key written over and over): jump past it.
                answer = await self._js_api(client, subject, {"seq": seq, "next_by_subj": ">"})
                message = answer.get("message")
                if not isinstance(message, dict):
                    return
                seq = int(message["seq"])

    async def exists(self, resource_id: UUID) -> bool:
        """Whether the resolver holds this resource's account JWT (for sweeps and tests)."""
        account = self.account_key(resource_id).public_key
        return bool(await self._resolver_jwt(account, "checked"))


@functools.lru_cache(maxsize=_ACCOUNT_KEYS_CACHED)
def _derived_account_key(operator_seed: str, resource_id: UUID) -> natsjwt.NKey:
    # Cached: deriving costs ~0.3 ms (nkeys checksums in pure Python), which a usage sweep of
    # hundreds of accounts would spend blocking the event loop on every pass.
    return natsjwt.NKey.derive(
        operator_seed.encode(), _ACCOUNT_KEY_INFO + resource_id.bytes, natsjwt.KeyKind.ACCOUNT
    )


async def _in_flight(request: Callable[[str], Awaitable[_T]], accounts: list[str]) -> list[_T]:
    """``request`` for every account, up to ``_MAX_IN_FLIGHT`` at once, results in order.

    All requests share one connection, so they travel together: the wait is about one round
    trip however many there are. The first failure is raised once every request has ended.
    """
    slots = asyncio.Semaphore(_MAX_IN_FLIGHT)

    async def one(account: str) -> _T:
        async with slots:
            return await request(account)

    results = await asyncio.gather(*(one(a) for a in accounts), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exceptions left


def _counted(limit: int) -> int:
    """An account's JetStream limit as the server adds it up: an unlimited one counts nothing.

    JSZ sends the limit as a uint64, so -1 (unlimited) arrives as 2**64 - 1.
    """
    return limit if limit <= _INT64_MAX else 0


def _revocation_time(current: dict[str, Any] | None, action: str) -> int:
    """The revocation time for the next user; that user is issued one second after it.

    The new user's ``iat`` can be up to a second ahead of the clock: the server compares
    ``iat`` with revocations only, never with the clock.
    """
    try:
        earlier = natsjwt.revocations_of(current or {})
    except natsjwt.NatsJwtError as exc:
        msg = f"The NATS account's revocations are unreadable; nothing was {action}."
        raise SpinupError(ErrorCode.BACKEND_ERROR, msg) from exc
    return natsjwt.revocation_time(earlier, time.time())


def _sign_nonce(user: natsjwt.NKey, nonce: str) -> bytes:
    return base64.b64encode(user.sign(nonce.encode()))


def _message_line(stream: str, message: dict[str, Any]) -> bytes:
    return _json_line(
        {
            "stream": stream,
            "seq": int(message["seq"]),
            "subject": message["subject"],
            "time": message.get("time"),
            "headers": _headers(message.get("hdrs")),
            "data": message.get("data", ""),
        }
    )


def _json_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _headers(raw_b64: str | None) -> dict[str, str] | None:
    """The headers of a stored message (its ``NATS/1.0`` block, base64) as a name → value map."""
    if not raw_b64:
        return None
    lines = base64.b64decode(raw_b64).decode("utf-8", "replace").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name:
            headers[name] = value.strip()
    return headers or None


async def _quiet(exc: Exception) -> None:
    # nats-py's default prints a traceback; the export's own errors say what failed.
    log.info("queue_provisioner.export_reader.error", error=type(exc).__name__)
