"""AES-256-GCM sealing with a key id in every ciphertext, so keys can rotate.

Format: ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``. The active key seals; every key in
the ring opens. Rotation: put the new key first, keep the old ones until nothing sealed with
them remains.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class SealError(Exception):
    """A sealed value could not be opened: unknown key id, corrupt or tampered."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Keyring:
    """Named AES-256 keys; ``active`` is the id used to seal."""

    active: str
    keys: dict[str, AESGCM]

    @classmethod
    def from_setting(cls, value: str) -> Keyring:
        """Parse ``kid:base64key[,kid:base64key...]``; the first key is the active one.

        Raises:
            ValueError: the setting is malformed or a key is not 32 bytes.
        """
        keys: dict[str, AESGCM] = {}
        order: list[str] = []
        for raw_item in value.split(","):
            item = raw_item.strip()
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            if not sep or not kid or "." in kid:
                msg = "each key must look like '<id>:<base64 of 32 bytes>' (id without dots)"
                raise ValueError(msg)
            key = _b64decode(encoded)
            if len(key) != _KEY_BYTES:
                msg = f"key {kid!r} is {len(key)} bytes; AES-256 needs {_KEY_BYTES}"
                raise ValueError(msg)
            keys[kid] = AESGCM(key)
            order.append(kid)
        if not order:
            msg = "no keys given"
            raise ValueError(msg)
        return cls(active=order[0], keys=keys)

    def seal(self, plaintext: bytes, *, aad: bytes) -> str:
        """Encrypt and authenticate ``plaintext``; ``aad`` binds it to its context (e.g. an id)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self.keys[self.active].encrypt(nonce, plaintext, aad)
        return f"{_VERSION}.{self.active}.{_b64encode(nonce + sealed)}"

    def open(self, sealed: str, *, aad: bytes) -> bytes:
        """Decrypt a value made by ``seal`` with the same ``aad``.

        Raises:
            SealError: wrong format, unknown key id, or the value or ``aad`` was altered.
        """
        version, _, rest = sealed.partition(".")
        kid, _, payload = rest.partition(".")
        if version != _VERSION or not payload:
            msg = "not a sealed value"
            raise SealError(msg)
        key = self.keys.get(kid)
        if key is None:
            msg = f"sealed with unknown key id {kid!r}"
            raise SealError(msg)
        raw = _b64decode(payload)
        try:
            return key.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except InvalidTag as exc:
            msg = "sealed value failed authentication"
            raise SealError(msg) from exc


def generate_key_setting(kid: str = "k1") -> str:
    """A fresh ``kid:key`` item for ``SPINUP_SEAL_KEYS``."""
    return f"{kid}:{_b64encode(os.urandom(_KEY_BYTES))}"
