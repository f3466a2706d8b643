import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.webhooks.driver import (
    ReceiveKey,
    encode_body,
    parse_receive_key,
    receive_key,
    receive_key_of_url,
)
from gateway.webhooks.routes import largest_webhook_body
from shared.observability.logging import redact_text
from shared.plans import parse_plans

KEY = b"k" * 32
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_receive_key_names_its_receiver_and_generation_and_only_under_the_right_key() -> None:
    rid = uuid.uuid4()
    key = receive_key(KEY, rid, 1)
    assert key.startswith(f"whk_{rid.hex}")
    assert key.endswith("1")
    assert parse_receive_key(KEY, key) == ReceiveKey(rid, 1)
    assert parse_receive_key(b"j" * 32, key) is None
    assert receive_key_of_url(KEY, f"https://spinup.test/webhook/receive/{key}") == ReceiveKey(
        rid, 1
    )


def test_each_generation_has_its_own_mac_and_cannot_be_relabelled() -> None:
    rid = uuid.uuid4()
    first, second = receive_key(KEY, rid, 1), receive_key(KEY, rid, 2)
    assert first[36:68] != second[36:68]
    assert parse_receive_key(KEY, second) == ReceiveKey(rid, 2)
    # The old MAC with a new generation number (or the reverse) is a forgery.
    assert parse_receive_key(KEY, first[:-1] + "2") is None
    assert parse_receive_key(KEY, second[:-1] + "1") is None
    big = receive_key(KEY, rid, 10**17)
    assert parse_receive_key(KEY, big) == ReceiveKey(rid, 10**17)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda k: k[:-1] + ("1" if k[-1] == "0" else "0"),
        lambda k: k[:-2],
        lambda k: k + "0",
        lambda k: k.upper(),
        lambda k: k.replace("whk_", "spn_"),
        lambda k: k[:4] + uuid.uuid4().hex + k[36:],
        lambda k: k[:-1] + "4",  # another generation under the same MAC
        lambda k: k[:-1] + "03",  # the same generation spelt with a leading zero
        lambda k: k[:-1] + "0",  # generations start at 1
        lambda k: k[:-1],  # no generation
        lambda k: k[:68] + "1" * 19,  # more than Redis counts
        lambda _: "",
    ],
)
def test_tampered_receive_keys_name_nothing(tamper: Callable[[str], str]) -> None:
    key = receive_key(KEY, uuid.uuid4(), 3)
    assert parse_receive_key(KEY, tamper(key)) is None


def test_receive_key_mac_is_redacted_from_logs_but_the_id_is_kept() -> None:
    rid = uuid.uuid4()
    key = receive_key(KEY, rid, 12)
    mac = key[36:68]
    cleaned = redact_text(f"POST /webhook/receive/{key}/push")
    assert mac not in cleaned
    assert not any(mac[i : i + 8] in cleaned for i in range(0, 32, 4))
    assert f"whk_{rid.hex}" in cleaned


def test_bodies_are_text_when_utf8_else_base64() -> None:
    assert encode_body("héllo".encode()) == ("héllo", "utf-8")
    assert encode_body(b"\xff\x00") == ("/wA=", "base64")
    assert encode_body(b"") == ("", "utf-8")


def test_receive_route_cap_is_the_largest_tier_limit_in_the_plans() -> None:
    text = (REPO_ROOT / "plans.yaml").read_text()
    plans = parse_plans(text)
    largest = max(tier.webhook.max_body_kb for tier in plans.tiers.values())
    assert largest_webhook_body(plans) == largest * 1024
    bigger = text.replace(f"max_body_kb: {largest}", f"max_body_kb: {largest * 3}", 1)
    assert largest_webhook_body(parse_plans(bigger)) == largest * 3 * 1024
