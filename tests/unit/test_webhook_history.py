"""Cursors and filters of captured requests: pure, so every edge is cheap to pin here."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from gateway.webhooks.driver import StoredRequest, encode_body
from gateway.webhooks.history import RequestFilter, decode_cursor, encode_cursor
from shared.contracts.errors import ErrorCode, SpinupError

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
AT = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def a_request(body: bytes = b"", **fields: object) -> StoredRequest:
    text, encoding = encode_body(body)
    values: dict[str, object] = {
        "seq": 7,
        "id": "0" * 32,
        "method": "POST",
        "path": "/stripe/events",
        "query": "",
        "query_params": {},
        "headers": [("stripe-signature", "t=1,v1=ab"), ("x-dup", "a"), ("x-dup", "b")],
        "body": text,
        "body_encoding": encoding,
        "size": len(body),
        "received_at": AT,
        "client_ip": "127.0.0.1",
        **fields,
    }
    return StoredRequest(**values)  # type: ignore[arg-type]


def parsed(**given: str) -> RequestFilter:
    params: dict[str, str | None] = dict.fromkeys(
        ("method", "path_prefix", "header", "body", "since", "until")
    )
    return RequestFilter.parse(**{**params, **given}, known_methods=METHODS)


@pytest.mark.parametrize("seq", [0, 1, 42, 2**63 - 1])
def test_a_cursor_names_its_seq_and_looks_opaque(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert str(seq) not in cursor
    assert decode_cursor("cursor", cursor) == seq


@pytest.mark.parametrize(
    "cursor",
    ["", "x", "not-a-cursor", base64.urlsafe_b64encode(b"whc1:-1").decode(), "\u00e9\u00e9"],
)
def test_a_cursor_we_did_not_issue_is_a_400_naming_the_parameter(cursor: str) -> None:
    with pytest.raises(SpinupError) as refused:
        decode_cursor("after", cursor)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert "`after`" in str(refused.value)


def test_every_condition_given_must_hold() -> None:
    request = a_request(b'{"type": "invoice.paid"}')
    assert parsed().matches(request)
    assert parsed(method="post,put").matches(request)
    assert not parsed(method="GET").matches(request)
    assert parsed(path_prefix="stripe").matches(request)  # the leading "/" is implied
    assert not parsed(path_prefix="/github").matches(request)
    assert parsed(header="Stripe-Signature: t=1").matches(request)
    assert parsed(header="x-dup: b").matches(request)  # a repeated header's later value
    assert not parsed(header="x-dup: c").matches(request)
    assert parsed(body="invoice.paid").matches(request)
    assert not parsed(body="INVOICE").matches(request)  # the body keeps its case
    assert parsed(since=AT.isoformat(), until=(AT + timedelta(seconds=1)).isoformat()).matches(
        request
    )
    assert not parsed(until=AT.isoformat()).matches(request)  # until is exclusive
    assert parsed(since="2026-12-04T08:00:00").matches(request)  # no zone: UTC


def test_a_binary_body_is_searched_in_its_bytes() -> None:
    request = a_request(b"\xff\xfe\x00 needle \x80")
    assert request.body_encoding == "base64"
    assert parsed(body="needle").matches(request)
    assert not parsed(body="haystack").matches(request)


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"method": "FETCH"}, "`method`"),
        ({"method": " , "}, "`method`"),
        ({"header": ""}, "`header`"),
        ({"body": ""}, "`body`"),
        ({"since": "yesterday"}, "`since`"),
        ({"until": "2026-13-01"}, "`until`"),
        ({"since": "2026-12-04T09:00:00Z", "until": "2026-12-04T09:00:00Z"}, "`until`"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(given: dict[str, str], named: str) -> None:
    with pytest.raises(SpinupError) as refused:
        parsed(**given)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    assert named in str(refused.value)
