import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.webhook_driver import encode_body, receive_key, resource_id_of_receive_key
from gateway.webhooks import largest_webhook_body
from shared.logging import redact_text
from shared.plans import parse_plans

KEY = b"k" * 32
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_receive_key_names_its_receiver_and_only_under_the_right_key() -> None:
    rid = uuid.uuid4()
    key = receive_key(KEY, rid)
    assert key.startswith(f"whk_{rid.hex}")
    assert resource_id_of_receive_key(KEY, key) == rid
    assert resource_id_of_receive_key(b"j" * 32, key) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda k: k[:-1] + ("1" if k[-1] == "0" else "0"),
        lambda k: k[:-2],
        lambda k: k + "0",
        lambda k: k.upper(),
        lambda k: k.replace("whk_", "spn_"),
        lambda k: k[:4] + uuid.uuid4().hex + k[36:],
        lambda _: "",
    ],
)
def test_tampered_receive_keys_name_nothing(tamper: Callable[[str], str]) -> None:
    key = receive_key(KEY, uuid.uuid4())
    assert resource_id_of_receive_key(KEY, tamper(key)) is None


def test_receive_key_mac_is_redacted_from_logs_but_the_id_is_kept() -> None:
    rid = uuid.uuid4()
    key = receive_key(KEY, rid)
    cleaned = redact_text(f"POST /webhook/receive/{key}/push")
    assert key[36:] not in cleaned
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
