from shared.observability.logging import REDACTED, redact_secrets, redact_text


def test_passwords_in_urls_tokens_and_verifiers_are_redacted_from_text() -> None:
    text = (
        "connect postgresql://t_ab:hunter2@127.0.0.1:5432/t_ab token spn_"
        + "A" * 43
        + " verifier SCRAM-SHA-256$4096:c2FsdA==$a:b"
    )
    cleaned = redact_text(text)
    assert "hunter2" not in cleaned
    assert "A" * 43 not in cleaned
    assert "c2FsdA" not in cleaned
    assert "postgresql://t_ab:[redacted]@127.0.0.1:5432/t_ab" in cleaned


def test_secret_named_fields_are_redacted_whatever_their_content() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "password": "p",
            "dsn": "anything",
            "token": "t",
            "token_hash": "kept",
            "nested": {"api_key": "k", "fine": "ok"},
        },
    )
    assert event["password"] == event["dsn"] == event["token"] == REDACTED
    assert event["token_hash"] == "kept"
    assert event["nested"] == {"api_key": REDACTED, "fine": "ok"}
