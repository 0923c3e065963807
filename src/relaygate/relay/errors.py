"""Error bodies in the caller's dialect, pre-encoded where the message is fixed.

Relay routes answer in OpenAI's shape ``{"error": {"message", "type", "code"}}``; the
management API in New API's ``{"success": false, "message": ...}`` (see relaygate.api).
Messages never contain a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from relaygate.relay.dialects import error_body

JSON = "application/json"


@dataclass(eq=False)
class RelayError(Exception):
    """A refusal. Module-level instances are shared: whoever catches one must call
    ``forget_traceback`` so that repeated raises do not chain tracebacks forever."""

    status: int
    message: str
    type: str
    code: str

    def forget_traceback(self) -> None:
        self.__traceback__ = None
        self.__context__ = None
        self.__cause__ = None

    def response(self, request_id: str = "", dialect: str = "openai") -> web.Response:
        message = f"{self.message} (request id: {request_id})" if request_id else self.message
        body = error_body(dialect, self.status, message, self.type, self.code)
        headers = {"X-Oneapi-Request-Id": request_id} if request_id else None
        return web.Response(status=self.status, body=body, content_type=JSON, headers=headers)


def _e(status: int, message: str, type_: str, code: str) -> RelayError:
    return RelayError(status, message, type_, code)


MISSING_KEY = _e(
    401,
    "You didn't provide an API key. Pass it as 'Authorization: Bearer sk-...'.",
    "invalid_request_error",
    "missing_api_key",
)
INVALID_KEY = _e(401, "Invalid token: no such API key.", "invalid_request_error", "invalid_api_key")
TOKEN_DISABLED = _e(401, "This token has been disabled.", "invalid_request_error", "token_disabled")
TOKEN_EXPIRED = _e(401, "This token has expired.", "invalid_request_error", "token_expired")
TOKEN_DELETED = INVALID_KEY  # a deleted key answers exactly like one that never existed
USER_DISABLED = _e(403, "User has been banned.", "permission_error", "user_disabled")
IP_DENIED = _e(
    403, "Your IP is not in the token's allowed list.", "permission_error", "access_denied"
)
TOKEN_EXHAUSTED = _e(
    429, "This token's quota has been used up.", "insufficient_quota", "insufficient_quota"
)
TOKEN_QUOTA = _e(
    429,
    "This token does not have enough quota left for this request.",
    "insufficient_quota",
    "insufficient_quota",
)
USER_QUOTA = _e(
    429,
    "Your account does not have enough quota left for this request.",
    "insufficient_quota",
    "insufficient_user_quota",
)
DAILY_QUOTA = _e(
    429, "This token's daily quota is used up.", "insufficient_quota", "daily_quota_exceeded"
)
MONTHLY_QUOTA = _e(
    429, "This token's monthly quota is used up.", "insufficient_quota", "monthly_quota_exceeded"
)
QUOTA_PER_DOLLAR = 500_000


def quota_refusal(base: RelayError, needed: int, left: int) -> RelayError:
    """A quota 429 that says how much the request needed and how much was left (same
    status, type and code as ``base``; a new instance, off the hot path)."""
    left = max(left, 0)
    message = (
        f"{base.message.rstrip('.')}: it needs at least {needed} quota "
        f"(${needed / QUOTA_PER_DOLLAR:.6f}), {left} left (${left / QUOTA_PER_DOLLAR:.6f})."
    )
    return RelayError(base.status, message, base.type, base.code)


AUTH_RATE_LIMITED = _e(
    429,
    "Too many failed authentications from your address; try again in a minute.",
    "rate_limit_error",
    "too_many_failed_authentications",
)
UPSTREAM_UNREACHABLE = _e(
    502,
    "The upstream channel could not be reached; nothing was charged.",
    "upstream_error",
    "bad_gateway",
)
# The upstream refused the channel's own credential (its 401/403): the caller's key is fine,
# and the upstream's body, which may echo the channel key, is not passed on.
UPSTREAM_AUTH_FAILED = _e(
    502, "upstream channel authentication failed", "upstream_error", "upstream_auth_failed"
)
LEDGER_UNAVAILABLE = _e(
    503, "The quota ledger is unavailable; try again shortly.", "server_error", "ledger_unavailable"
)
UNREADABLE_BODY = _e(
    400,
    "The request body could not be read: it does not match its Content-Encoding.",
    "invalid_request_error",
    "invalid_body_encoding",
)
METADATA_UNAVAILABLE = _e(
    503,
    "Token settings changed and cannot be reloaded right now; try again shortly.",
    "server_error",
    "metadata_unavailable",
)


def bad_request(message: str, code: str = "invalid_request") -> RelayError:
    return _e(400, message, "invalid_request_error", code)


def model_not_allowed(model: str) -> RelayError:
    return _e(
        403, f"This token has no access to model {model}.", "permission_error", "model_not_allowed"
    )


def no_channel(group: str, model: str) -> RelayError:
    return _e(
        503,
        f"No available channel for model {model} in group {group}.",
        "server_error",
        "model_not_found",
    )


def model_price_missing(model: str) -> RelayError:
    return _e(
        400,
        f"Model {model} has no price configured; ask an administrator to set its ratio.",
        "invalid_request_error",
        "model_price_error",
    )


def group_refused(group: str, reason: str) -> RelayError:
    """New API's checks #13 (a group the user may not use) and #14 (a group no longer priced)."""
    if reason == "deprecated":
        return _e(
            403, f"Group {group} has been deprecated.", "permission_error", "group_deprecated"
        )
    return _e(403, f"No access to group {group}.", "permission_error", "group_forbidden")
