import uuid

import pytest

from shared.crypto.sealing import Keyring, SealError, generate_key_setting
from shared.crypto.tokens import fingerprint, hash_token, looks_like_token, mint_token


def test_sealed_value_opens_with_same_context_only() -> None:
    ring = Keyring.from_setting(generate_key_setting("k1"))
    sealed = ring.seal(b"postgresql://u:secret@h/db", aad=b"resource-1")
    assert b"secret" not in sealed.encode()
    assert ring.open(sealed, aad=b"resource-1") == b"postgresql://u:secret@h/db"
    with pytest.raises(SealError):
        ring.open(sealed, aad=b"resource-2")


def test_rotated_keyring_seals_with_new_key_and_opens_old_values() -> None:
    old = generate_key_setting("k1")
    new = generate_key_setting("k2")
    sealed_before = Keyring.from_setting(old).seal(b"x", aad=b"")
    rotated = Keyring.from_setting(f"{new},{old}")
    assert rotated.open(sealed_before, aad=b"") == b"x"
    assert rotated.seal(b"y", aad=b"").startswith("v1.k2.")


def test_tampered_or_unknown_key_values_are_refused() -> None:
    ring = Keyring.from_setting(generate_key_setting("k1"))
    sealed = ring.seal(b"data", aad=b"")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        ring.open(tampered, aad=b"")
    with pytest.raises(SealError, match="unknown key id"):
        Keyring.from_setting(generate_key_setting("other")).open(sealed, aad=b"")


@pytest.mark.parametrize("setting", ["", "k1", "k1:c2hvcnQ", "a.b:" + "A" * 43])
def test_malformed_key_settings_are_rejected(setting: str) -> None:
    with pytest.raises(ValueError, match="key"):
        Keyring.from_setting(setting)


def test_token_is_stable_per_command_and_unique_across_commands() -> None:
    key = b"k" * 32
    command = uuid.uuid4()
    token = mint_token(key, command)
    assert token == mint_token(key, command)
    assert token != mint_token(key, uuid.uuid4())
    assert token != mint_token(b"j" * 32, command)
    assert looks_like_token(token)
    assert hash_token(token) != token
    assert len(hash_token(token)) == 64


@pytest.mark.parametrize(
    "value", ["", "spn_", "spn_short", "xyz_" + "a" * 43, "spn_" + "a" * 43 + "'"]
)
def test_malformed_tokens_are_recognised_before_any_lookup(value: str) -> None:
    assert not looks_like_token(value)


def test_fingerprint_groups_a_subnet_and_is_keyed() -> None:
    key = b"k" * 32
    assert fingerprint(key, "203.0.113.7") == fingerprint(key, "203.0.113.200")
    assert fingerprint(key, "203.0.113.7") != fingerprint(key, "203.0.114.7")
    assert fingerprint(key, "2001:db8:1:2::1") == fingerprint(key, "2001:db8:1:ffff::9")
    assert fingerprint(key, "203.0.113.7") != fingerprint(b"j" * 32, "203.0.113.7")
