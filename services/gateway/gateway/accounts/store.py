"""Accounts: the ``account-<id>`` event streams, their read model, and password hashing.

The log is the truth; ``accounts``, ``access_tokens`` and ``revoked_sessions`` are a projection
the gateway owns, updated in the appending transaction, so a read right after a write sees it.
Email uniqueness is the unique index on ``accounts``: a second registration's projection fails
inside the append, the whole append rolls back, and nothing of it reaches the log.
Rows are written only from event data and ``recorded_at``, never from the clock, so
``rebuild_accounts`` gives the same tables.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.contracts.errors import ErrorCode, SpinupError
from shared.contracts.events import (
    AccessTokenCreated,
    AccessTokenRevoked,
    AccountEvent,
    AccountRegistered,
    RecordedEvent,
    SessionRevoked,
    StoredEvent,
)
from shared.eventlog.codec import decode_event
from shared.eventlog.errors import ConcurrencyConflictError, platform_errors
from shared.eventlog.schema import HOLD_APPENDS
from shared.eventlog.store import EventStore

ACCOUNT_STREAM_PREFIX = "account-"
# Appends to one account race only with that account's other requests (two logouts at once):
# a few re-reads of its version settle it.
_APPEND_ATTEMPTS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id            uuid PRIMARY KEY,
    version       integer     NOT NULL,
    email         text        NOT NULL,
    tier          text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);
-- Emails are stored lower-cased; the index on lower() holds even for a row written otherwise.
CREATE UNIQUE INDEX IF NOT EXISTS accounts_email ON accounts (lower(email));

CREATE TABLE IF NOT EXISTS access_tokens (
    id          uuid PRIMARY KEY,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    name        text        NOT NULL,
    scopes      text[]      NOT NULL,
    token_hash  text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS access_tokens_account ON access_tokens (account_id);

-- Logged-out sessions until their JWT would have expired anyway; looked up by primary key.
CREATE TABLE IF NOT EXISTS revoked_sessions (
    jti         text PRIMARY KEY,
    account_id  uuid        NOT NULL,
    expires_at  timestamptz NOT NULL
);
"""


def account_stream(account_id: UUID) -> str:
    """The event stream id of one account."""
    return f"{ACCOUNT_STREAM_PREFIX}{account_id}"


# -- projection ---------------------------------------------------------------------------------


async def _apply(conn: Any, event: StoredEvent, recorded_at: datetime) -> None:  # noqa: ANN401  (asyncpg connection)
    """One account event as rows."""
    match event:
        case AccountRegistered():
            await conn.execute(
                "INSERT INTO accounts (id, version, email, tier, password_hash, created_at)"
                " VALUES ($1, 0, $2, $3, $4, $5)",
                event.account_id,
                event.email,
                event.tier,
                event.password_hash,
                recorded_at,
            )
        case AccessTokenCreated():
            await conn.execute(
                "INSERT INTO access_tokens"
                " (id, account_id, name, scopes, token_hash, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                event.token_id,
                event.account_id,
                event.name,
                event.scopes,
                event.token_hash,
                recorded_at,
                event.expires_at,
            )
        case AccessTokenRevoked():
            await conn.execute(
                "UPDATE access_tokens SET revoked_at = coalesce(revoked_at, $3)"
                " WHERE id = $1 AND account_id = $2",
                event.token_id,
                event.account_id,
                recorded_at,
            )
        case SessionRevoked():
            await conn.execute(
                "INSERT INTO revoked_sessions (jti, account_id, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (jti) DO NOTHING",
                event.jti,
                event.account_id,
                event.expires_at,
            )
        case _:  # pragma: no cover  (only account events are appended to account streams)
            msg = f"{type(event).__name__} does not belong in an account stream"
            raise TypeError(msg)


class AccountProjection:
    """Keeps the account tables equal to the fold of every ``account-*`` stream.

    Incremental: ``accounts.version`` is the last event applied, so each append reads only its
    own new events (in one query) however long the account's stream has grown (every logout
    adds one).
    """

    def handles(self, stream_id: str) -> bool:
        """Account streams only."""
        return stream_id.startswith(ACCOUNT_STREAM_PREFIX)

    async def project(
        self,
        conn: Any,  # noqa: ANN401  (asyncpg connection)
        stream_id: str,
        appended: Sequence[RecordedEvent],  # noqa: ARG002  (it reads from the tables' version on)
    ) -> None:
        """Apply the stream's events the tables have not seen yet."""
        account_id = UUID(stream_id.removeprefix(ACCOUNT_STREAM_PREFIX))
        rows = await conn.fetch(
            "SELECT version, event_type, data, recorded_at FROM events WHERE stream_id = $1"
            " AND version > coalesce((SELECT version FROM accounts WHERE id = $2), 0)"
            " ORDER BY version",
            stream_id,
            account_id,
        )
        for row in rows:
            await _apply(conn, decode_event(row["event_type"], row["data"]), row["recorded_at"])
        if rows:
            await conn.execute(
                "UPDATE accounts SET version = $2 WHERE id = $1", account_id, rows[-1]["version"]
            )


async def rebuild_accounts(pool: asyncpg.Pool) -> int:
    """Recompute the account tables from the log alone; returns the number of accounts.

    Holds appends back (``HOLD_APPENDS``), so the log stands still while it runs.
    """
    projection = AccountProjection()
    async with platform_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(HOLD_APPENDS)
        await conn.execute("TRUNCATE accounts, access_tokens, revoked_sessions")
        streams = await conn.fetch(
            "SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE $1 ORDER BY stream_id",
            f"{ACCOUNT_STREAM_PREFIX}%",
        )
        for row in streams:
            await projection.project(conn, row["stream_id"], ())
    return len(streams)


# -- what a registration must look like ---------------------------------------------------------

MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets
PASSWORD_LENGTHS = range(10, 257)  # long enough to resist guessing; short enough to hash cheaply


def fold_email(raw: str) -> str:
    """The form an email is stored and looked up in: trimmed and lower-cased (not checked)."""
    return raw.strip().lower()


def normalise_email(raw: str) -> str:
    """The email as stored and looked up (``fold_email``), once it looks like one.

    Raises:
        SpinupError: INVALID_REQUEST unless it looks like ``name@domain.tld``.
    """
    email = fold_email(raw)
    local, at, domain = email.partition("@")
    well_formed = (
        at
        and local
        and "@" not in domain
        and "." in domain.strip(".")
        and not domain.startswith(".")
        and not domain.endswith(".")
        and ".." not in domain
        and len(email) <= MAX_EMAIL_LENGTH
        and all(c.isprintable() and not c.isspace() for c in email)
    )
    if not well_formed:
        msg = f"email must look like name@example.com (at most {MAX_EMAIL_LENGTH} characters)."
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)
    return email


def check_new_password(password: str) -> None:
    """Refuse a password outside the allowed lengths.

    Raises:
        SpinupError: INVALID_REQUEST naming the rule.
    """
    if len(password) not in PASSWORD_LENGTHS:
        msg = (
            f"password must be {PASSWORD_LENGTHS.start} to {PASSWORD_LENGTHS.stop - 1} characters"
            f" long; this one has {len(password)}."
        )
        raise SpinupError(ErrorCode.INVALID_REQUEST, msg)


# -- passwords ----------------------------------------------------------------------------------


class Passwords:
    """argon2id hashing (argon2-cffi's RFC 9106 low-memory profile: 64 MiB, 3 passes).

    Each hash takes ~0.15 s of CPU and 64 MiB, so it runs in a worker thread (the event loop
    keeps serving) and at most one per CPU at once (a burst of logins cannot exhaust memory).
    """

    def __init__(
        self, hasher: PasswordHasher | None = None, concurrency: int | None = None
    ) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency or os.cpu_count() or 1)
        # Verifying against this when the email is unknown makes that answer cost what a wrong
        # password costs, so response times do not reveal which emails have accounts.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The argon2id hash (salt and parameters included) to store."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``None`` (no such account) costs the same and fails.

        libargon2 compares the digests in constant time.
        """
        async with self._slots:
            matches = await asyncio.to_thread(
                self._matches, password_hash or self._dummy_hash, password
            )
        return matches and password_hash is not None

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


# -- the read model and the writes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """An account as the API shows it."""

    id: UUID
    email: str
    tier: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A personal access token's record; the secret itself is never kept."""

    id: UUID
    account_id: UUID
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class SessionAccount:
    """What authenticating a session needs: the account's tier, and whether it logged out."""

    tier: str
    revoked: bool


_ACCOUNT_COLUMNS = "id, email, tier, created_at"
_TOKEN_COLUMNS = "id, account_id, name, scopes, created_at, expires_at, revoked_at"  # noqa: S105  (column names)


def _account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], email=row["email"], tier=row["tier"], created_at=row["created_at"])


def _access_token(row: asyncpg.Record) -> AccessToken:
    return AccessToken(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


class Accounts:
    """Registering, logging in, tokens and logouts: events appended, the projection read."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, passwords: Passwords) -> None:
        self._pool = pool
        self._store = store
        self.passwords = passwords

    async def register(
        self, email: str, password: str, *, tier: str, correlation_id: str
    ) -> Account:
        """A new account on ``tier``; ``email`` must already be normalised.

        Raises:
            SpinupError: EMAIL_TAKEN when an account has this email.
        """
        if await self._id_of_email(email) is not None:
            raise _email_taken()
        account_id = uuid.uuid4()
        event = AccountRegistered(
            account_id=account_id,
            email=email,
            password_hash=await self.passwords.hash(password),
            tier=tier,
        )
        try:
            [recorded] = await self._store.append(
                account_stream(account_id),
                0,
                [event],
                command_id=uuid.uuid4(),
                correlation_id=correlation_id,
            )
        except ConcurrencyConflictError:
            # A fresh stream cannot have moved: the email's unique index refused the row.
            raise _email_taken() from None
        # What the projection wrote in that transaction: the event's data and its recorded_at.
        return Account(id=account_id, email=email, tier=tier, created_at=recorded.recorded_at)

    async def log_in(self, email: str, password: str) -> Account:
        """The account whose email (as typed: it is folded here) and password these are.

        Raises:
            SpinupError: INVALID_CREDENTIALS, the same for an unknown email as a wrong password.
        """
        folded = fold_email(email)
        row = None
        # Postgres text cannot hold a NUL (the query would fail, a 500), and registration
        # refuses every unprintable character: no account has such an email.
        if "\x00" not in folded:
            async with platform_errors():
                row = await self._pool.fetchrow(
                    f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM accounts"
                    " WHERE lower(email) = $1",
                    folded,
                )
        # Verified even for an unknown email (against the dummy hash): the same cost either way.
        matches = await self.passwords.verify(row["password_hash"] if row else None, password)
        if row is None or not matches:
            msg = "Wrong email or password."
            raise SpinupError(
                ErrorCode.INVALID_CREDENTIALS,
                msg,
                agent_action="Check the email and password, or register (POST /auth/register).",
            )
        return _account(row)

    async def get(self, account_id: UUID) -> Account | None:
        """One account by id."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = $1", account_id
            )
        return _account(row) if row else None

    async def session_account(self, account_id: UUID, jti: str) -> SessionAccount | None:
        """The account of a session and whether that session logged out (one round trip)."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                "SELECT tier, EXISTS (SELECT 1 FROM revoked_sessions WHERE jti = $2) AS revoked"
                " FROM accounts WHERE id = $1",
                account_id,
                jti,
            )
        return SessionAccount(tier=row["tier"], revoked=row["revoked"]) if row else None

    async def access_token_by_hash(self, token_hash: str) -> tuple[AccessToken, str] | None:
        """The access token with this SHA-256 hash, and its account's tier."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                "SELECT t.id, t.account_id, t.name, t.scopes, t.created_at, t.expires_at,"
                " t.revoked_at, a.tier FROM access_tokens t JOIN accounts a ON a.id = t.account_id"
                " WHERE t.token_hash = $1",
                token_hash,
            )
        return (_access_token(row), row["tier"]) if row else None

    async def access_tokens(self, account_id: UUID) -> list[AccessToken]:
        """Every access token of the account, revoked ones included, oldest first."""
        async with platform_errors():
            rows = await self._pool.fetch(
                f"SELECT {_TOKEN_COLUMNS} FROM access_tokens WHERE account_id = $1"
                " ORDER BY created_at, id",
                account_id,
            )
        return [_access_token(row) for row in rows]

    async def access_token(self, account_id: UUID, token_id: UUID) -> AccessToken | None:
        """One of the account's access tokens (None for another account's)."""
        async with platform_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_TOKEN_COLUMNS} FROM access_tokens WHERE id = $1 AND account_id = $2",
                token_id,
                account_id,
            )
        return _access_token(row) if row else None

    async def create_access_token(
        self,
        account_id: UUID,
        *,
        name: str,
        scopes: Sequence[str],
        token_hash: str,
        expires_at: datetime | None,
        correlation_id: str,
    ) -> AccessToken:
        """Record a new access token by the hash of its secret."""
        token_id = uuid.uuid4()
        event = AccessTokenCreated(
            account_id=account_id,
            token_id=token_id,
            name=name,
            scopes=list(scopes),
            token_hash=token_hash,
            expires_at=expires_at,
        )
        recorded = await self._append(account_id, event, correlation_id)
        # What the projection wrote in that transaction: the event's data and its recorded_at.
        return AccessToken(
            id=token_id,
            account_id=account_id,
            name=name,
            scopes=tuple(scopes),
            created_at=recorded.recorded_at,
            expires_at=expires_at,
            revoked_at=None,
        )

    async def revoke_access_token(self, token: AccessToken, *, correlation_id: str) -> AccessToken:
        """Stop ``token`` authenticating; revoking a revoked token changes nothing."""
        if token.revoked_at is None:
            event = AccessTokenRevoked(account_id=token.account_id, token_id=token.id)
            await self._append(token.account_id, event, correlation_id)
        revoked = await self.access_token(token.account_id, token.id)
        return revoked or token

    async def revoke_session(
        self, account_id: UUID, *, jti: str, expires_at: datetime, correlation_id: str
    ) -> None:
        """Log a session out: its JWT is refused from now on."""
        event = SessionRevoked(account_id=account_id, jti=jti, expires_at=expires_at)
        await self._append(account_id, event, correlation_id)

    async def _id_of_email(self, email: str) -> UUID | None:
        async with platform_errors():
            found: UUID | None = await self._pool.fetchval(
                "SELECT id FROM accounts WHERE lower(email) = $1", email
            )
        return found

    async def _append(
        self, account_id: UUID, event: AccountEvent, correlation_id: str
    ) -> RecordedEvent:
        """Append to an existing account's stream at its current version, re-reading on races."""
        for _ in range(_APPEND_ATTEMPTS):
            async with platform_errors():
                version = await self._pool.fetchval(
                    "SELECT version FROM accounts WHERE id = $1", account_id
                )
            if version is None:
                msg = "This account no longer exists. Register again (POST /auth/register)."
                raise SpinupError(ErrorCode.UNAUTHORIZED, msg)
            try:
                [recorded] = await self._store.append(
                    account_stream(account_id),
                    version,
                    [event],
                    command_id=uuid.uuid4(),
                    correlation_id=correlation_id,
                )
            except ConcurrencyConflictError:
                continue
            return recorded
        msg = "This account is changing too quickly to record that; try again."
        raise SpinupError(ErrorCode.COMMAND_IN_PROGRESS, msg, retryable=True)


def _email_taken() -> SpinupError:
    return SpinupError(
        ErrorCode.EMAIL_TAKEN,
        "An account with this email already exists.",
        agent_action="Log in with it (POST /auth/login), or register with another email.",
    )
