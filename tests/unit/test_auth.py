"""Session JWTs, access tokens, the Authorization header, and the registration rules."""

import base64
import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from gateway.accounts.auth import (
    ACCESS_TOKEN_PREFIX,
    ALL_SCOPES,
    SESSION_AUDIENCE,
    SESSION_ISSUER,
    Principal,
    Scope,
    bearer_credential,
    issue_session,
    looks_like_access_token,
    mint_access_token,
    read_session,
)
from gateway.accounts.store import Passwords, check_new_password, normalise_email
from shared.contracts.errors import ErrorCode, SpinupError
from shared.crypto.tokens import hash_token

KEY = secrets.token_bytes(64)  # long enough for HS512 too: pyjwt warns below
ACCOUNT = uuid.uuid4()


def claims(**overrides: object) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    base: dict[str, object] = {
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "sub": str(ACCOUNT),
        "jti": "a-jti",
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(token: str, key: bytes = KEY) -> SpinupError:
    with pytest.raises(SpinupError) as caught:
        read_session(key, token)
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert "Log in again" in caught.value.message
    return caught.value


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_issued_session_reads_back_with_its_account_jti_and_expiry() -> None:
    now = datetime.now(UTC)
    session = issue_session(KEY, ACCOUNT, ttl_s=600, now=now)
    read = read_session(KEY, session.token)
    assert read.account_id == ACCOUNT
    assert read.jti == session.jti
    assert (
        read.expires_at == session.expires_at == now.replace(microsecond=0) + timedelta(seconds=600)
    )
    header = jwt.get_unverified_header(session.token)
    assert header["alg"] == "HS256"
    payload = jwt.decode(session.token, options={"verify_signature": False})
    assert set(payload) == {"iss", "aud", "sub", "jti", "iat", "exp"}


def test_every_session_has_its_own_jti() -> None:
    jtis = {issue_session(KEY, ACCOUNT, ttl_s=60).jti for _ in range(50)}
    assert len(jtis) == 50


def test_expired_session_says_it_expired() -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    token = issue_session(KEY, ACCOUNT, ttl_s=60, now=past).token
    assert "expired" in refused(token).message


def test_session_signed_with_another_key_is_refused() -> None:
    token = issue_session(secrets.token_bytes(64), ACCOUNT, ttl_s=60).token
    assert "not valid" in refused(token).message


def test_unsigned_alg_none_session_is_refused() -> None:
    token = b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + "."
    refused(token)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_algorithms_with_the_right_key_are_refused(algorithm: str) -> None:
    refused(jwt.encode(claims(), KEY, algorithm=algorithm))


@pytest.mark.parametrize("missing", ["exp", "iat", "jti", "sub", "iss", "aud"])
def test_session_without_a_required_claim_is_refused(missing: str) -> None:
    refused(jwt.encode(claims(**{missing: None}), KEY, algorithm="HS256"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "someone-else"},
        {"iss": "someone-else"},
        {"sub": "not-a-uuid"},
        {"iat": int(datetime.now(UTC).timestamp()) + 3600},
    ],
)
def test_session_with_wrong_claims_is_refused(overrides: dict[str, object]) -> None:
    refused(jwt.encode(claims(**overrides), KEY, algorithm="HS256"))


@pytest.mark.parametrize("token", ["", "a.b.c", "not a jwt", "spp_x"])
def test_garbage_is_refused_as_a_session(token: str) -> None:
    refused(token)


def test_access_tokens_are_prefixed_random_and_stored_as_sha256() -> None:
    tokens = {mint_access_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith(ACCESS_TOKEN_PREFIX)
        assert len(token) == len(ACCESS_TOKEN_PREFIX) + 43
        assert looks_like_access_token(token)
        assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    "value",
    ["spp_", "spp_" + "A" * 42, "spp_" + "A" * 44, "spn_" + "A" * 43, "spp_" + "%" * 43],
)
def test_access_token_shape_check_refuses_near_misses(value: str) -> None:
    assert not looks_like_access_token(value)


@pytest.mark.parametrize(
    ("header", "credential"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER spp_x", "spp_x")],
)
def test_bearer_credential_is_taken_from_the_header(header: str, credential: str) -> None:
    assert bearer_credential(header) == credential


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "abc"])
def test_other_authorization_schemes_are_refused(header: str) -> None:
    with pytest.raises(SpinupError) as caught:
        bearer_credential(header)
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert "Bearer" in caught.value.message


def test_access_token_principal_has_only_its_scopes() -> None:
    principal = Principal(
        account_id=ACCOUNT, tier="t", scopes=frozenset({Scope.READ}), session=None
    )
    principal.require(Scope.READ)
    with pytest.raises(SpinupError) as caught:
        principal.require(Scope.PROVISION)
    assert caught.value.code is ErrorCode.INSUFFICIENT_SCOPE
    assert "provision" in caught.value.message
    with pytest.raises(SpinupError) as forbidden:
        principal.require_session("manage access tokens")
    assert forbidden.value.code is ErrorCode.FORBIDDEN


def test_session_principal_has_every_scope() -> None:
    session = issue_session(KEY, ACCOUNT, ttl_s=60)
    principal = Principal(account_id=ACCOUNT, tier="t", scopes=ALL_SCOPES, session=session)
    for scope in Scope:
        principal.require(scope)
    assert principal.require_session("manage access tokens") is session


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  ada.lovelace+test@mail.example.org ", "ada.lovelace+test@mail.example.org"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, stored: str) -> None:
    assert normalise_email(raw) == stored


@pytest.mark.parametrize(
    "email",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "a@b@example.com",
        "ada@.example.com",
        "ada@example.com.",
        "ada@example..com",
        "ada lovelace@example.com",
        "ada@exa\nmple.com",
        "a" * 250 + "@example.com",
    ],
)
def test_malformed_emails_are_refused(email: str) -> None:
    with pytest.raises(SpinupError) as caught:
        normalise_email(email)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert "email" in caught.value.message


@pytest.mark.parametrize("length", [10, 11, 255, 256])
def test_passwords_of_allowed_lengths_pass(length: int) -> None:
    check_new_password("p" * length)


@pytest.mark.parametrize("length", [0, 9, 257, 5000])
def test_passwords_too_short_or_long_are_refused(length: int) -> None:
    with pytest.raises(SpinupError) as caught:
        check_new_password("p" * length)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert f"has {length}" in caught.value.message


async def test_passwords_hash_with_argon2id_and_verify() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert hashed != await passwords.hash("correct horse battery staple")  # salted
    assert await passwords.verify(hashed, "correct horse battery staple")
    assert not await passwords.verify(hashed, "correct horse battery stapler")
    assert not await passwords.verify("not a hash", "correct horse battery staple")


async def test_unknown_account_verifies_against_a_dummy_and_fails() -> None:
    passwords = Passwords()
    assert not await passwords.verify(None, "")
    assert not await passwords.verify(None, "correct horse battery staple")
