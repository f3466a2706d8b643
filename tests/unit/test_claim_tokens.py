import time
import uuid

import jwt
import pytest

from gateway.claims.routes import (
    CLAIM_AUDIENCE,
    CLAIM_ISSUER,
    ClaimToken,
    mint_claim_token,
    read_claim_token,
    token_text,
)
from gateway.neon.routes import _parse_id, resource_id_of
from shared.contracts.errors import ErrorCode, SpinupError

KEY = b"k" * 32
FP = "0123456789abcdef0123456789abcdef"


def refused(token: str, key: bytes = KEY) -> ErrorCode:
    with pytest.raises(SpinupError) as caught:
        read_claim_token(key, token)
    return caught.value.code


def test_a_claim_token_names_the_network_a_fresh_claim_and_its_lifetime() -> None:
    now = time.time()
    token = read_claim_token(KEY, mint_claim_token(KEY, FP, ttl_seconds=600, now=now))
    assert isinstance(token, ClaimToken)
    assert token.fingerprint == FP
    assert token.resource_ids is None
    assert abs(token.issued_at.timestamp() - now) < 0.001
    assert token.expires_at.timestamp() == int(now) + 600
    again = read_claim_token(KEY, mint_claim_token(KEY, FP, ttl_seconds=600, now=now))
    assert again.claim_id != token.claim_id


def test_a_token_may_name_exact_resources() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    token = read_claim_token(KEY, mint_claim_token(KEY, FP, ttl_seconds=60, resource_ids=ids))
    assert token.resource_ids == frozenset(ids)


def test_an_expired_token_is_410_even_though_its_signature_is_good() -> None:
    old = mint_claim_token(KEY, FP, ttl_seconds=60, now=time.time() - 3600)
    assert refused(old) is ErrorCode.CLAIM_TOKEN_EXPIRED


def test_an_expired_token_with_a_bad_signature_is_invalid_not_expired() -> None:
    old = mint_claim_token(b"x" * 32, FP, ttl_seconds=60, now=time.time() - 3600)
    assert refused(old) is ErrorCode.INVALID_CLAIM_TOKEN


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "spn_" + "A" * 43])
def test_garbage_is_invalid(garbage: str) -> None:
    assert refused(garbage) is ErrorCode.INVALID_CLAIM_TOKEN


def test_another_key_is_invalid() -> None:
    assert refused(mint_claim_token(KEY, FP, ttl_seconds=60), b"o" * 32) == (
        ErrorCode.INVALID_CLAIM_TOKEN
    )


def claims(**override: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": CLAIM_ISSUER,
        "aud": CLAIM_AUDIENCE,
        "typ": "claim",
        "jti": str(uuid.uuid4()),
        "fp": FP,
        "iat": now,
        "exp": now + 60,
    }
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


def test_the_algorithm_is_pinned() -> None:
    hs512 = jwt.encode(claims(), KEY * 2, algorithm="HS512")
    assert refused(hs512, KEY * 2) is ErrorCode.INVALID_CLAIM_TOKEN
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert refused(unsigned) is ErrorCode.INVALID_CLAIM_TOKEN


def test_a_session_jwt_signed_with_the_same_key_is_not_a_claim_token() -> None:
    session = {"iss": "spinup", "aud": "spinup-session", "sub": str(uuid.uuid4())}
    session |= {"jti": "x", "iat": int(time.time()), "exp": int(time.time()) + 60}
    assert refused(jwt.encode(session, KEY, algorithm="HS256")) is ErrorCode.INVALID_CLAIM_TOKEN


def test_a_claim_token_is_refused_by_a_decoder_expecting_another_audience() -> None:
    token = mint_claim_token(KEY, FP, ttl_seconds=60)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, KEY, algorithms=["HS256"], audience="spinup-session")


@pytest.mark.parametrize(
    "override",
    [
        {"typ": "session"},
        {"typ": None},
        {"fp": None},
        {"fp": 7},
        {"jti": "not-a-uuid"},
        {"rid": ["not-a-uuid"]},
        {"rid": 5},
        {"aud": "spinup-session"},
        {"iss": "someone-else"},
    ],
)
def test_malformed_claims_are_invalid(override: dict[str, object]) -> None:
    token = jwt.encode(claims(**override), KEY, algorithm="HS256")
    assert refused(token) is ErrorCode.INVALID_CLAIM_TOKEN


def test_a_claim_url_given_for_a_token_is_read_as_its_token() -> None:
    token = mint_claim_token(KEY, FP, ttl_seconds=60)
    assert token_text(f"https://spinup.example/claim?t={token}") == token
    assert token_text(f" {token}\n") == token
    assert token_text("https://spinup.example/claim?x=1") == ""


def test_a_neon_database_id_maps_to_another_resource_id_always_the_same() -> None:
    database_id = uuid.uuid4()
    assert resource_id_of(database_id) == resource_id_of(database_id)
    assert resource_id_of(database_id) != database_id
    assert resource_id_of(uuid.uuid4()) != resource_id_of(database_id)


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        "00000000-0000-0000-0000-000000000000",
        str(uuid.uuid1()),
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")),
        "",
    ],
)
def test_a_client_chosen_database_id_must_be_a_random_uuid(raw: str) -> None:
    with pytest.raises(SpinupError) as caught:
        _parse_id(raw, chosen_by_client=True)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert caught.value.message == "Database not found"
    assert caught.value.agent_action


def test_random_uuids_are_accepted_as_database_ids() -> None:
    v4 = uuid.uuid4()
    v7 = uuid.UUID(int=(v4.int & ~(0xF << 76)) | (7 << 76))
    assert _parse_id(str(v4), chosen_by_client=True) == v4
    assert _parse_id(str(v7), chosen_by_client=True) == v7
