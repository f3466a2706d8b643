"""The one list of error codes and the one exception hierarchy.

Codes are stable strings: clients and agents match on them. The gateway holds the only
code -> HTTP status table (``gateway.errors``); a test checks every code has a status.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable, documented error codes."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    #: The request line and headers together are over the gateway's bound (RFC 6585: 431).
    REQUEST_HEADERS_TOO_LARGE = "request_headers_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RESOURCE_GONE = "resource_gone"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    #: The Idempotency-Key was first sent with another body (IETF httpapi-idempotency-key: 422).
    IDEMPOTENCY_KEY_MISMATCH = "idempotency_key_mismatch"
    WORKER_UNAVAILABLE = "worker_unavailable"
    WORKER_TIMEOUT = "worker_timeout"
    COMMAND_IN_PROGRESS = "command_in_progress"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"
    PLATFORM_UNAVAILABLE = "platform_unavailable"
    INVALID_COMMAND = "invalid_command"
    INTERNAL_ERROR = "internal_error"
    # accounts and auth
    UNAUTHORIZED = "unauthorized"
    INVALID_CREDENTIALS = "invalid_credentials"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    FORBIDDEN = "forbidden"
    #: A console form without this browser's CSRF token (ADR 0021).
    CSRF_FAILED = "csrf_failed"
    EMAIL_TAKEN = "email_taken"
    # plans, quotas and abuse controls
    RATE_LIMITED = "rate_limited"
    PLAN_LIMIT_REACHED = "plan_limit_reached"
    # claim
    INVALID_CLAIM_TOKEN = "invalid_claim_token"  # noqa: S105  (an error code)
    CLAIM_TOKEN_EXPIRED = "claim_token_expired"  # noqa: S105
    CLAIM_ALREADY_USED = "claim_already_used"
    NOTHING_TO_CLAIM = "nothing_to_claim"
    # stacks
    INVALID_MANIFEST = "invalid_manifest"
    STACK_BUSY = "stack_busy"
    #: A stack's public URL names a service that is not running (building, stopped, failed).
    APP_NOT_RUNNING = "app_not_running"
    #: The service runs but did not answer the gateway's proxied request.
    APP_UNREACHABLE = "app_unreachable"


class SpinupError(Exception):
    """An error with a stable code, safe to show to a client.

    ``message`` must never contain secrets or a library's ``repr``: it is what the user reads.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = False,
        agent_action: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        #: One sentence telling a coding agent what to do next (claim, upgrade, delete…).
        self.agent_action = agent_action
        #: Seconds a client should wait before trying again (HTTP ``Retry-After``).
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class BackendUnavailableError(SpinupError):
    """A customer backend (the tenant's server) cannot be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BACKEND_UNAVAILABLE, message, retryable=True)


class PlatformUnavailableError(SpinupError):
    """The platform's own Postgres or NATS cannot be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.PLATFORM_UNAVAILABLE, message, retryable=True)


class DropRefusedError(Exception):
    """A driver was asked to drop something whose name lacks the tenant prefix.

    Deliberately not a ``SpinupError``: it is a bug, never a client's mistake.
    """
