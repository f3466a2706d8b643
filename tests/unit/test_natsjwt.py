import base64
import hashlib
import json

import nkeys
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from shared.crypto import natsjwt
from shared.crypto.natsjwt import AccountLimits, KeyKind, NatsJwtError, NKey


def segments(token: str) -> list[dict[str, object]]:
    header, claims, _ = token.split(".")
    return [
        json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        for part in (header, claims)
    ]


def test_generated_keys_have_the_prefix_of_their_role_and_round_trip_through_the_seed() -> None:
    for kind, letter in ((KeyKind.OPERATOR, "O"), (KeyKind.ACCOUNT, "A"), (KeyKind.USER, "U")):
        key = NKey.generate(kind)
        assert key.public_key.startswith(letter)
        assert key.seed.startswith("S" + letter)
        assert NKey.from_seed(key.seed) == key
        assert natsjwt.public_key_kind(key.public_key) is kind
        assert key.seed not in repr(key)


def test_derived_keys_are_stable_per_info_and_differ_across_infos_and_secrets() -> None:
    first = NKey.derive(b"secret", b"resource-1", KeyKind.ACCOUNT)
    assert NKey.derive(b"secret", b"resource-1", KeyKind.ACCOUNT) == first
    assert NKey.derive(b"secret", b"resource-2", KeyKind.ACCOUNT) != first
    assert NKey.derive(b"other", b"resource-1", KeyKind.ACCOUNT) != first
    assert first.public_key.startswith("A")


def test_jwt_has_the_nats_header_unpadded_parts_and_a_jti_hashing_the_other_claims() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    token = natsjwt.operator_jwt(operator, name="op")
    assert "=" not in token
    header, claims = segments(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    without_jti = {key: value for key, value in claims.items() if key != "jti"}
    digest = hashlib.new(
        "sha512_256", json.dumps(without_jti, separators=(",", ":")).encode()
    ).digest()
    assert claims["jti"] == base64.b32encode(digest).decode().rstrip("=")


def test_operator_jwt_is_self_signed_and_names_the_system_account() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    system = NKey.generate(KeyKind.ACCOUNT)
    claims = natsjwt.decode_jwt(
        natsjwt.operator_jwt(operator, name="op", system_account=system.public_key),
        issuer=operator.public_key,
    )
    assert claims["iss"] == claims["sub"] == operator.public_key
    assert claims["nats"] == {
        "type": "operator",
        "system_account": system.public_key,
        "version": 2,
    }


def test_account_jwt_round_trips_with_the_servers_jetstream_field_names() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    account = NKey.generate(KeyKind.ACCOUNT)
    limits = AccountLimits(
        connections=5,
        leaf_connections=0,
        payload_bytes=65536,
        streams=2,
        consumers=4,
        memory_storage_bytes=1048576,
        disk_storage_bytes=10485760,
        max_bytes_required=True,
    )
    token = natsjwt.account_jwt(account.public_key, operator, name="t_x", limits=limits)
    claims = natsjwt.decode_jwt(token, issuer=operator.public_key)
    assert claims["sub"] == account.public_key
    assert claims["name"] == "t_x"
    assert claims["nats"]["type"] == "account"
    assert claims["nats"]["version"] == 2
    assert claims["nats"]["limits"] == {
        "subs": -1,
        "data": -1,
        "payload": 65536,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": 5,
        "leaf": 0,
        "mem_storage": 1048576,
        "disk_storage": 10485760,
        "streams": 2,
        "consumer": 4,
        "max_bytes_required": True,
    }


def test_account_without_storage_has_no_jetstream_limits() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    account = NKey.generate(KeyKind.ACCOUNT)
    token = natsjwt.account_jwt(account.public_key, operator, name="SYS", limits=AccountLimits())
    limits = natsjwt.decode_jwt(token)["nats"]["limits"]
    assert not {"mem_storage", "disk_storage", "streams", "consumer"} & set(limits)


def test_user_jwt_is_signed_by_its_account_and_the_signature_checks_against_it() -> None:
    account = NKey.generate(KeyKind.ACCOUNT)
    user = NKey.generate(KeyKind.USER)
    token = natsjwt.user_jwt(user.public_key, account, name="t_x")
    claims = natsjwt.decode_jwt(token, issuer=account.public_key)
    assert claims["sub"] == user.public_key
    assert claims["nats"]["type"] == "user"
    header_b64, claims_b64, signature_b64 = token.split(".")
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    pair = nkeys.from_seed(account.seed.encode())
    assert pair.verify(f"{header_b64}.{claims_b64}".encode(), signature)


def test_decoding_refuses_another_issuer_and_tampered_claims() -> None:
    account = NKey.generate(KeyKind.ACCOUNT)
    user = NKey.generate(KeyKind.USER)
    token = natsjwt.user_jwt(user.public_key, account, name="t_x")
    with pytest.raises(NatsJwtError):
        natsjwt.decode_jwt(token, issuer=NKey.generate(KeyKind.ACCOUNT).public_key)
    header_b64, _, signature_b64 = token.split(".")
    forged = dict(segments(token)[1], name="t_y")
    forged_b64 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(NatsJwtError):
        natsjwt.decode_jwt(f"{header_b64}.{forged_b64}.{signature_b64}")
    with pytest.raises(NatsJwtError):
        natsjwt.decode_jwt("not.a.jwt")


def test_delete_claim_is_a_generic_operator_claim_listing_the_accounts() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    accounts = [NKey.generate(KeyKind.ACCOUNT).public_key for _ in range(2)]
    claims = natsjwt.decode_jwt(
        natsjwt.delete_accounts_claim(operator, accounts), issuer=operator.public_key
    )
    assert claims["sub"] == operator.public_key
    assert claims["nats"] == {"accounts": accounts, "type": "generic", "version": 2}


def test_creds_text_is_read_back_by_nats_py() -> None:
    account = NKey.generate(KeyKind.ACCOUNT)
    user = NKey.generate(KeyKind.USER)
    token = natsjwt.user_jwt(user.public_key, account, name="t_x")
    creds = natsjwt.creds_file(token, user.seed)
    assert natsjwt.jwt_of_creds(creds) == token
    client = NatsClient()
    raw = RawCredentials(creds)
    assert bytes(client._read_creds_user_jwt(raw)).decode() == token
    assert bytes(client._read_creds_user_nkey(raw)).decode() == user.seed


def test_account_jwt_carries_revocations_and_reads_them_back() -> None:
    operator = NKey.generate(KeyKind.OPERATOR)
    account = NKey.generate(KeyKind.ACCOUNT)
    token = natsjwt.account_jwt(
        account.public_key,
        operator,
        name="t_x",
        limits=AccountLimits(),
        revocations={natsjwt.ALL_USERS: 1_700_000_000},
    )
    claims = natsjwt.decode_jwt(token, issuer=operator.public_key)
    assert claims["nats"]["revocations"] == {"*": 1_700_000_000}
    assert natsjwt.revocations_of(claims) == {"*": 1_700_000_000}
    bare = natsjwt.account_jwt(account.public_key, operator, name="t_x", limits=AccountLimits())
    assert "revocations" not in natsjwt.decode_jwt(bare)["nats"]
    assert natsjwt.revocations_of(natsjwt.decode_jwt(bare)) == {}


@pytest.mark.parametrize("revocations", [["*"], {"*": "1"}, {"*": 1.5}, {"*": True}])
def test_malformed_revocations_are_refused(revocations: object) -> None:
    with pytest.raises(NatsJwtError):
        natsjwt.revocations_of({"nats": {"revocations": revocations}})


def test_a_new_revocation_covers_every_user_issued_after_the_last_one_even_in_its_second() -> None:
    now = 1_700_000_000.7
    assert natsjwt.revocation_time({}, now) == 1_700_000_000
    # The last revocation is this second: its user got iat = now + 1, which must be covered.
    assert natsjwt.revocation_time({"*": 1_700_000_000}, now) == 1_700_000_001
    assert natsjwt.revocation_time({"*": 1_700_000_001}, now) == 1_700_000_002
    assert natsjwt.revocation_time({"*": 1_600_000_000}, now) == 1_700_000_000
    # Revocations of single users do not count: issued users are covered by "*" only.
    assert natsjwt.revocation_time({"UABC": 1_800_000_000}, now) == 1_700_000_000


def test_user_jwt_takes_the_issue_time_it_is_given() -> None:
    account = NKey.generate(KeyKind.ACCOUNT)
    user = NKey.generate(KeyKind.USER)
    token = natsjwt.user_jwt(user.public_key, account, name="t_x", issued_at=1_700_000_001)
    assert natsjwt.decode_jwt(token, issuer=account.public_key)["iat"] == 1_700_000_001
    fresh = natsjwt.decode_jwt(natsjwt.user_jwt(user.public_key, account, name="t_x"))
    assert isinstance(fresh["iat"], int)
    assert fresh["iat"] > 1_700_000_001
