"""NATS nkeys and JWTs (operator, account, user, generic delete claim) and ``.creds`` files.

A small minter following nats-io/jwt v2 (``claims.go``, ``account_claims.go``,
``user_claims.go``, ``operator_claims.go``): header ``{"typ":"JWT","alg":"ed25519-nkey"}``,
base64url parts without padding, an ed25519 signature by the issuer's nkey over
``header.payload``, and ``jti`` = base32 (no padding) of SHA-512/256 of the claims without
``jti``. Go hashes only the registered claims; this hashes every claim, so two JWTs that differ
only in their ``nats`` section (new limits within one second) still get distinct ids — the
server's JWT store ignores an update whose ``jti`` equals the stored one.

Why not the PyPI ``nats-jwt`` package: it writes ``memory_storage`` where the server reads
``mem_storage``, which silently disables memory streams (docs/backends.md, NATS).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
#: nats-io/jwt ``libVersion``: every claim written here is a v2 claim.
JWT_VERSION = 2
#: No limit, as nats-io/jwt spells it.
NO_LIMIT = -1
#: The ``revocations`` key that stands for every user of the account (nats-io/jwt ``All``).
ALL_USERS = "*"
_SEED_BYTES = 32
_PUBLIC_KEY_BYTES = 35  # prefix byte + 32 key bytes + 2 CRC bytes


class NatsJwtError(ValueError):
    """A JWT or nkey that is malformed, of the wrong kind, or whose signature does not verify."""


class KeyKind(enum.Enum):
    """The roles of nkeys used here, each with its nkeys prefix byte (first letter)."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR  # "O"
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT  # "A"
    USER = nkeys.PREFIX_BYTE_USER  # "U"


@dataclass(frozen=True, slots=True)
class NKey:
    """An nkey pair: the encoded seed (secret) and public key.

    Attributes:
        seed: ``S…`` encoded seed; whoever holds it can sign as this key.
        public_key: ``O…``, ``A…`` or ``U…`` encoded public key (the JWT subject or issuer).
    """

    seed: str
    public_key: str
    # Loaded once: loading a seed (base32, checksum, the ed25519 key) cost as much as a
    # signature, and a queue create signs twice with keys it already holds.
    _pair: nkeys.KeyPair = field(repr=False, compare=False)

    def __repr__(self) -> str:
        """Show the public key only: a seed must never reach a log line."""
        return f"NKey(public_key={self.public_key!r})"

    @classmethod
    def from_seed(cls, seed: str) -> NKey:
        """Load an encoded seed (``S…``).

        Raises:
            NatsJwtError: not a valid nkey seed.
        """
        try:
            pair = nkeys.from_seed(seed.strip().encode())
            public = pair.public_key.decode()
        except (nkeys.NkeysError, binascii.Error, ValueError) as exc:
            msg = "not a valid nkey seed"
            raise NatsJwtError(msg) from exc
        return cls(seed=seed.strip(), public_key=public, _pair=pair)

    @classmethod
    def from_raw(cls, raw_seed: bytes, kind: KeyKind) -> NKey:
        """The nkey whose ed25519 seed is ``raw_seed`` (32 bytes)."""
        if len(raw_seed) != _SEED_BYTES:
            msg = f"an ed25519 seed has {_SEED_BYTES} bytes, got {len(raw_seed)}"
            raise NatsJwtError(msg)
        return cls.from_seed(nkeys.encode_seed(raw_seed, kind.value).decode())

    @classmethod
    def generate(cls, kind: KeyKind) -> NKey:
        """A new random key of ``kind``."""
        return cls.from_raw(os.urandom(_SEED_BYTES), kind)

    @classmethod
    def derive(cls, secret: bytes, info: bytes, kind: KeyKind) -> NKey:
        """A key of ``kind`` derived from ``secret`` with HKDF-SHA256: same inputs, same key.

        Lets a driver find a tenant's key again from its resource id alone, without storing it.
        """
        raw = HKDF(algorithm=hashes.SHA256(), length=_SEED_BYTES, salt=None, info=info).derive(
            secret
        )
        return cls.from_raw(raw, kind)

    def sign(self, data: bytes) -> bytes:
        """The raw ed25519 signature of ``data``."""
        return bytes(self._pair.sign(data))


def public_key_kind(public_key: str) -> KeyKind:
    """The role of an encoded public key, after checking its CRC.

    Raises:
        NatsJwtError: not a valid operator, account or user public key.
    """
    raw = _decode_public_key(public_key)
    for kind in KeyKind:
        if raw[0] == kind.value:
            return kind
    msg = "not an operator, account or user public key"
    raise NatsJwtError(msg)


def _decode_public_key(public_key: str) -> bytes:
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError) as exc:
        msg = "public key is not base32"
        raise NatsJwtError(msg) from exc
    if len(raw) != _PUBLIC_KEY_BYTES:
        msg = "public key has the wrong length"
        raise NatsJwtError(msg)
    body, crc = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != crc:
        msg = "public key checksum does not match"
        raise NatsJwtError(msg)
    return body


# --- limits --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountLimits:
    """``nats.limits`` of an account JWT (nats-io/jwt ``OperatorLimits``, untiered).

    ``NO_LIMIT`` (-1) means unlimited; for the JetStream fields 0 means JetStream is off.
    Field names are the Python spelling; ``as_claim`` writes the server's JSON names.
    """

    subscriptions: int = NO_LIMIT
    data_bytes: int = NO_LIMIT
    payload_bytes: int = NO_LIMIT
    imports: int = NO_LIMIT
    exports: int = NO_LIMIT
    wildcard_exports: bool = True
    connections: int = NO_LIMIT
    leaf_connections: int = NO_LIMIT
    memory_storage_bytes: int = 0
    disk_storage_bytes: int = 0
    streams: int = 0
    consumers: int = 0
    max_bytes_required: bool = False

    def as_claim(self) -> dict[str, Any]:
        """The JSON object the server reads (``account_claims.go`` struct tags)."""
        claim: dict[str, Any] = {
            "subs": self.subscriptions,
            "data": self.data_bytes,
            "payload": self.payload_bytes,
            "imports": self.imports,
            "exports": self.exports,
            "wildcards": self.wildcard_exports,
            "conn": self.connections,
            "leaf": self.leaf_connections,
        }
        if self.memory_storage_bytes or self.disk_storage_bytes:
            claim |= {
                "mem_storage": self.memory_storage_bytes,
                "disk_storage": self.disk_storage_bytes,
                "streams": self.streams,
                "consumer": self.consumers,
            }
            if self.max_bytes_required:
                claim["max_bytes_required"] = True
        return claim


# --- encoding ------------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_claims(
    subject: str,
    nats: dict[str, Any],
    issuer: NKey,
    *,
    name: str | None = None,
    issued_at: int | None = None,
) -> str:
    """Sign a JWT about ``subject`` whose ``nats`` section is ``nats``, issued by ``issuer``.

    ``version`` is set to 2; ``jti`` and ``iss`` are filled in here, ``iat`` too (now, in
    seconds) unless ``issued_at`` is given.
    """
    iat = int(time.time()) if issued_at is None else issued_at
    claims: dict[str, Any] = {"iat": iat, "iss": issuer.public_key}
    if name:
        claims["name"] = name
    claims["sub"] = subject
    claims["nats"] = {**nats, "version": JWT_VERSION}
    jti = base64.b32encode(hashlib.new("sha512_256", _json(claims)).digest()).rstrip(b"=")
    claims = {"jti": jti.decode(), **claims}
    signing_input = f"{_b64url(_json(JWT_HEADER))}.{_b64url(_json(claims))}"
    signature = issuer.sign(signing_input.encode())
    return f"{signing_input}.{_b64url(signature)}"


def operator_jwt(operator: NKey, *, name: str, system_account: str | None = None) -> str:
    """The self-signed operator JWT the server trusts (``operator:`` in its config)."""
    nats: dict[str, Any] = {"type": "operator"}
    if system_account is not None:
        nats["system_account"] = system_account
    return encode_claims(operator.public_key, nats, operator, name=name)


def account_jwt(
    account: str,
    operator: NKey,
    *,
    name: str,
    limits: AccountLimits,
    revocations: Mapping[str, int] | None = None,
) -> str:
    """An account JWT for the public key ``account``, signed by the operator.

    ``revocations`` maps a user public key, or ``ALL_USERS``, to a time in Unix seconds: the
    server refuses (and disconnects) every user JWT of that key whose ``iat`` is at or before
    it (nats-io/jwt ``RevocationList.IsRevoked``: revoked when ``ts >= iat``).
    """
    nats: dict[str, Any] = {
        "limits": limits.as_claim(),
        "default_permissions": {"pub": {}, "sub": {}},
    }
    if revocations:
        nats["revocations"] = dict(revocations)
    return encode_claims(account, {**nats, "type": "account"}, operator, name=name)


def revocations_of(account_claims: Mapping[str, Any]) -> dict[str, int]:
    """The ``revocations`` of decoded account claims (empty when there are none).

    Raises:
        NatsJwtError: the section is not a map of public keys to whole seconds.
    """
    nats = account_claims.get("nats")
    revocations = nats.get("revocations") if isinstance(nats, dict) else None
    if revocations is None:
        return {}
    if not isinstance(revocations, dict) or not all(
        isinstance(key, str) and type(when) is int for key, when in revocations.items()
    ):
        msg = "account revocations are not a map of keys to seconds"
        raise NatsJwtError(msg)
    return dict(revocations)


def revocation_time(revocations: Mapping[str, int], now: float) -> int:
    """When to revoke ``ALL_USERS`` so every user issued so far is covered, and only those.

    Users are issued one second after the ``ALL_USERS`` revocation in force (a revocation
    covers ``iat`` at or before it, in whole seconds), so the next revocation must be later
    than that one even within the same second; otherwise it is ``now``.
    """
    return max(int(now), revocations.get(ALL_USERS, 0) + 1)


def user_jwt(user: str, account: NKey, *, name: str, issued_at: int | None = None) -> str:
    """A user JWT for the public key ``user``, signed by its account (no extra limits).

    ``issued_at`` (default now) is what the account's revocations are compared with: a user
    issued after a revocation must carry a later ``iat`` than the revocation's time.
    """
    nats = {
        "pub": {},
        "sub": {},
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "type": "user",
    }
    return encode_claims(user, nats, account, name=name, issued_at=issued_at)


def delete_accounts_claim(operator: NKey, accounts: list[str]) -> str:
    """The generic claim the full resolver takes on ``$SYS.REQ.CLAIMS.DELETE``."""
    return encode_claims(
        operator.public_key, {"accounts": list(accounts), "type": "generic"}, operator
    )


def creds_file(jwt: str, seed: str) -> str:
    """The standard ``.creds`` text (user JWT + seed) that NATS clients and the CLI read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def jwt_of_creds(creds: str) -> str:
    """The user JWT inside ``.creds`` text.

    Raises:
        NatsJwtError: no user JWT block in ``creds``.
    """
    lines = [line.strip() for line in creds.splitlines()]
    try:
        return lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
    except (ValueError, IndexError) as exc:
        msg = "no user JWT in the credentials"
        raise NatsJwtError(msg) from exc


# --- decoding ------------------------------------------------------------------------------------


def decode_jwt(token: str, *, issuer: str | None = None) -> dict[str, Any]:
    """The claims of ``token`` after verifying its signature with the key in its ``iss``.

    Args:
        token: the JWT.
        issuer: when given, the public key that must have issued it.

    Raises:
        NatsJwtError: malformed, wrong header, another issuer, or a bad signature.
    """
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64url(header_b64))
        claims = json.loads(_unb64url(claims_b64))
        signature = _unb64url(signature_b64)
    except (ValueError, binascii.Error) as exc:
        msg = "not a JWT"
        raise NatsJwtError(msg) from exc
    if header != JWT_HEADER or not isinstance(claims, dict):
        msg = "not a NATS v2 JWT"
        raise NatsJwtError(msg)
    signer = claims.get("iss")
    if not isinstance(signer, str) or (issuer is not None and signer != issuer):
        msg = "JWT not issued by the expected key"
        raise NatsJwtError(msg)
    key = Ed25519PublicKey.from_public_bytes(_decode_public_key(signer)[1:])
    try:
        key.verify(signature, f"{header_b64}.{claims_b64}".encode())
    except InvalidSignature as exc:
        msg = "JWT signature does not verify"
        raise NatsJwtError(msg) from exc
    return claims
