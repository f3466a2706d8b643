"""Signature schemes against the providers' own published examples, and what breaks them.

Where each vector comes from:

- GitHub: docs.github.com, "Validating webhook deliveries", section "Testing the webhook
  payload validation": secret ``It's a Secret to Everybody``, payload ``Hello, World!``.
- Slack: docs.slack.dev (formerly api.slack.com/authentication/verifying-requests-from-slack),
  the walk-through's slash-command example: signing secret ``8f742231b10e8888abcd99yyyzzz85a5``,
  timestamp 1531420618 and the form body below.
- Standard Webhooks: the test vector of the specification's reference libraries
  (github.com/standard-webhooks/standard-webhooks, ``libraries/*`` tests; Svix's libraries use
  the same one): ``whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw``, ``msg_p5jXN8AQM9LWM0D4loKWxJek``,
  1614265330, ``{"test": 2432232314}``.
- Stripe and Shopify publish no fixed example (their docs give the recipe and a code sample
  only: stripe.com/docs/webhooks#verify-manually, shopify.dev "Verify webhooks"). Their
  expected values here are built from that recipe with ``hmac`` directly in the test, never
  with the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.webhooks.signatures import (
    InvalidSecretError,
    Scheme,
    SignatureCheck,
    check_secret,
    verify,
)

VALID = SignatureCheck(status="valid")
MISMATCH = SignatureCheck(status="invalid", reason="signature_mismatch")
STALE = SignatureCheck(status="invalid", reason="timestamp_outside_tolerance")
MALFORMED = SignatureCheck(status="invalid", reason="malformed_header")

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STANDARD_TIMESTAMP = 1614265330
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

STRIPE_SECRET = "whsec_test_secret_for_unit_tests"
STRIPE_TIMESTAMP = 1700000000
STRIPE_BODY = b'{"id": "evt_1", "object": "event"}'

SHOPIFY_SECRET = "shopify_test_secret"
SHOPIFY_BODY = b'{"id": 820982911946154508, "email": "jon@example.com"}'


def stripe_header(secret: str, timestamp: int, body: bytes) -> str:
    """Stripe's documented recipe: hex HMAC-SHA256 of ``"{t}.{body}"``."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def shopify_header(secret: str, body: bytes) -> str:
    """Shopify's documented recipe: base64 HMAC-SHA256 of the body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def github(
    headers: list[tuple[str, str]], body: bytes = GITHUB_BODY, secret: str = GITHUB_SECRET
) -> SignatureCheck:
    return verify(Scheme.GITHUB, secret, headers, body, received_at=0)


def slack(
    headers: list[tuple[str, str]] | None = None,
    body: bytes = SLACK_BODY,
    secret: str = SLACK_SECRET,
    received_at: float = SLACK_TIMESTAMP,
) -> SignatureCheck:
    sent = (
        headers
        if headers is not None
        else [
            ("X-Slack-Request-Timestamp", str(SLACK_TIMESTAMP)),
            ("X-Slack-Signature", SLACK_SIGNATURE),
        ]
    )
    return verify(Scheme.SLACK, secret, sent, body, received_at=received_at)


def standard(
    signature: str = STANDARD_SIGNATURE,
    body: bytes = STANDARD_BODY,
    secret: str = STANDARD_SECRET,
    received_at: float = STANDARD_TIMESTAMP,
    tolerance_s: int | None = None,
) -> SignatureCheck:
    headers = [
        ("webhook-id", STANDARD_ID),
        ("webhook-timestamp", str(STANDARD_TIMESTAMP)),
        ("webhook-signature", signature),
    ]
    return verify(
        Scheme.STANDARD_WEBHOOKS,
        secret,
        headers,
        body,
        received_at=received_at,
        tolerance_s=tolerance_s,
    )


def stripe(
    header: str | None,
    body: bytes = STRIPE_BODY,
    secret: str = STRIPE_SECRET,
    received_at: float = STRIPE_TIMESTAMP,
) -> SignatureCheck:
    headers = [] if header is None else [("Stripe-Signature", header)]
    return verify(Scheme.STRIPE, secret, headers, body, received_at=received_at)


def shopify(header: str | None, body: bytes = SHOPIFY_BODY) -> SignatureCheck:
    headers = [] if header is None else [("X-Shopify-Hmac-Sha256", header)]
    return verify(Scheme.SHOPIFY, SHOPIFY_SECRET, headers, body, received_at=0)


# -- GitHub ---------------------------------------------------------------------------------------


def test_github_docs_example_is_valid_with_any_header_case() -> None:
    assert github([("X-Hub-Signature-256", GITHUB_SIGNATURE)]) == VALID
    assert github([("x-hub-signature-256", GITHUB_SIGNATURE)]) == VALID


def test_github_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    header = [("X-Hub-Signature-256", GITHUB_SIGNATURE)]
    assert github(header, body=b"Hello, World?") == MISMATCH
    assert github(header, secret="It's a Secret to Nobody") == MISMATCH


def test_github_malformed_and_missing() -> None:
    assert github([("X-Hub-Signature-256", "sha1=757107ea")]) == MALFORMED
    assert github([("X-Hub-Signature-256", GITHUB_SIGNATURE[:-2])]) == MALFORMED
    assert github([("X-Hub-Signature", "sha1=0123")]).status == "missing"


# -- Slack ----------------------------------------------------------------------------------------


def test_slack_docs_example_is_valid() -> None:
    assert slack() == VALID


def test_slack_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    assert slack(body=SLACK_BODY.replace(b"foobar", b"foobaz")) == MISMATCH
    assert slack(secret="8f742231b10e8888abcd99yyyzzz85a6") == MISMATCH


def test_slack_timestamp_older_than_five_minutes_is_outside_tolerance() -> None:
    assert slack(received_at=SLACK_TIMESTAMP + 300) == VALID
    assert slack(received_at=SLACK_TIMESTAMP + 301) == STALE
    assert slack(received_at=SLACK_TIMESTAMP - 301) == STALE


def test_slack_malformed_and_missing() -> None:
    no_timestamp = [("X-Slack-Signature", SLACK_SIGNATURE)]
    assert slack(no_timestamp) == MALFORMED
    bad_timestamp = [("X-Slack-Request-Timestamp", "soon"), ("X-Slack-Signature", SLACK_SIGNATURE)]
    assert slack(bad_timestamp) == MALFORMED
    wrong_version = [
        ("X-Slack-Request-Timestamp", str(SLACK_TIMESTAMP)),
        ("X-Slack-Signature", "v1=" + SLACK_SIGNATURE[3:]),
    ]
    assert slack(wrong_version) == MALFORMED
    assert slack([("X-Slack-Request-Timestamp", str(SLACK_TIMESTAMP))]).status == "missing"


# -- Standard Webhooks ----------------------------------------------------------------------------


def test_standard_webhooks_spec_vector_is_valid_also_among_several_signatures() -> None:
    assert standard() == VALID
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    assert standard(f"{other} {STANDARD_SIGNATURE}") == VALID
    assert standard(f"v1a,c29tZQ== {STANDARD_SIGNATURE}") == VALID


def test_standard_webhooks_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    assert standard(body=b'{"test": 2432232315}') == MISMATCH
    assert standard(secret="whsec_" + base64.b64encode(b"another key").decode()) == MISMATCH


def test_standard_webhooks_stale_timestamp_and_a_custom_tolerance() -> None:
    assert standard(received_at=STANDARD_TIMESTAMP + 301) == STALE
    assert standard(received_at=STANDARD_TIMESTAMP + 301, tolerance_s=600) == VALID
    assert standard(received_at=STANDARD_TIMESTAMP + 11, tolerance_s=10) == STALE


def test_standard_webhooks_malformed_and_missing() -> None:
    assert standard("v1:g0hM9SsE") == MALFORMED
    assert standard("v1,not base64!") == MALFORMED
    assert standard("v1a,c29tZQ==") == MALFORMED
    missing = verify(Scheme.STANDARD_WEBHOOKS, STANDARD_SECRET, [], STANDARD_BODY, received_at=0)
    assert missing.status == "missing"


def test_standard_webhooks_secret_must_be_base64() -> None:
    check_secret(Scheme.STANDARD_WEBHOOKS, STANDARD_SECRET)
    with pytest.raises(InvalidSecretError):
        check_secret(Scheme.STANDARD_WEBHOOKS, "whsec_not base64!")
    check_secret(Scheme.GITHUB, "anything at all")


# -- Stripe ---------------------------------------------------------------------------------------


def test_stripe_signed_per_the_docs_is_valid_among_other_schemes() -> None:
    header = stripe_header(STRIPE_SECRET, STRIPE_TIMESTAMP, STRIPE_BODY)
    assert stripe(header) == VALID
    # Stripe adds a v0 (test-mode) signature and, while rolling a secret, a second v1.
    assert stripe(f"{header},v0={'0' * 64}") == VALID
    assert stripe(f"{header.split(',')[0]},v1={'1' * 64},{header.split(',')[1]}") == VALID


def test_stripe_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    header = stripe_header(STRIPE_SECRET, STRIPE_TIMESTAMP, STRIPE_BODY)
    assert stripe(header, body=STRIPE_BODY + b" ") == MISMATCH
    assert stripe(header, secret="whsec_another") == MISMATCH


def test_stripe_timestamp_older_than_300_s_is_outside_tolerance() -> None:
    header = stripe_header(STRIPE_SECRET, STRIPE_TIMESTAMP, STRIPE_BODY)
    assert stripe(header, received_at=STRIPE_TIMESTAMP + 300) == VALID
    assert stripe(header, received_at=STRIPE_TIMESTAMP + 301) == STALE


def test_stripe_malformed_and_missing() -> None:
    assert stripe("v1=" + "a" * 64) == MALFORMED
    assert stripe(f"t={STRIPE_TIMESTAMP}") == MALFORMED
    assert stripe(f"t=yesterday,v1={'a' * 64}") == MALFORMED
    assert stripe("garbage") == MALFORMED
    assert stripe(None).status == "missing"


# -- Shopify --------------------------------------------------------------------------------------


def test_shopify_signed_per_the_docs_is_valid() -> None:
    assert shopify(shopify_header(SHOPIFY_SECRET, SHOPIFY_BODY)) == VALID


def test_shopify_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    assert shopify(shopify_header(SHOPIFY_SECRET, SHOPIFY_BODY), body=b"{}") == MISMATCH
    assert shopify(shopify_header("another secret", SHOPIFY_BODY)) == MISMATCH


def test_shopify_malformed_and_missing() -> None:
    assert shopify("not base64!") == MALFORMED
    assert shopify(base64.b64encode(b"short").decode()) == MALFORMED
    assert shopify(None).status == "missing"
