"""Errors Heliograph itself answers with, rendered in the shape the caller's SDK parses.

    GatewayError                      status + message + OpenAI-style type/code
    ├── AuthError (401)               missing, malformed, unknown or revoked Helicone key
    ├── Forbidden (403)               the key's scope is too small for this; the message names the scope needed
    ├── BadRequest (400)              bad Helicone-* header, refused gateway target, unknown route
    ├── NotFound (404)                no provider under this path
    ├── RequestTimeout (408)          the client stopped sending its request; the connection is closed
    ├── PayloadTooLarge (413)         a body over max_request_body_bytes; the connection is closed
    ├── BudgetExceeded (429)          a budget that applies is spent; names it and when it resets
    ├── Overloaded (503)              max_in_flight calls already in flight: refused at once, Retry-After
    ├── Unavailable (503)             something the call needs from the store (a prompt) cannot be read
    ├── UpstreamUnavailable (502)     connection to the provider failed or broke
    └── UpstreamTimeout (504)         the provider did not answer in time

On proxy routes the body follows the provider family: OpenAI's `{"error": {message, type, code}}`
or Anthropic's `{"type": "error", "error": {type, message}}`. On /api it is `{"data": null,
"error": message}`. Once an SSE stream has started, an error can no longer change the status: it
becomes a final SSE event (`sse_error_event`) and is recorded.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    status = 500
    openai_type = "api_error"
    anthropic_type = "api_error"
    code: str | None = None
    # The connection cannot carry another request (its request was not read to the end).
    close_connection = False

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self, family: str) -> bytes:
        if family == "anthropic":
            return orjson.dumps({"type": "error", "error": {"type": self.anthropic_type, "message": self.message}})
        return orjson.dumps({"error": {"message": self.message, "type": self.openai_type,
                                       "param": None, "code": self.code}})


class AuthError(GatewayError):
    status = 401
    openai_type = "invalid_request_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    openai_type = "invalid_request_error"
    anthropic_type = "permission_error"
    code = "insufficient_scope"


class BadRequest(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "invalid_request"


class NotFound(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    code = "not_found"


class RequestTimeout(GatewayError):
    status = 408
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "request_timeout"
    close_connection = True


class PayloadTooLarge(GatewayError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    code = "request_too_large"
    close_connection = True


class BudgetExceeded(GatewayError):
    """Refused before the upstream: the SDK is told not to retry (`x-should-retry: false`), as only
    the period's end helps."""
    status = 429
    openai_type = "insufficient_quota"
    anthropic_type = "rate_limit_error"
    code = "budget_exceeded"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Overloaded(GatewayError):
    status = 503
    anthropic_type = "overloaded_error"
    code = "gateway_overloaded"
    retry_after_seconds = 1


class Unavailable(GatewayError):
    status = 503
    openai_type = "api_error"
    anthropic_type = "api_error"
    code = "unavailable"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


def sse_error_event(family: str, message: str) -> bytes:
    """The last event of a stream that the upstream broke off."""
    if family == "anthropic":
        payload = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return b"event: error\ndata: " + payload + b"\n\n"
    payload = orjson.dumps({"error": {"message": message, "type": "api_error", "param": None,
                                      "code": "upstream_stream_error"}})
    return b"data: " + payload + b"\n\n"


def api_error(message: str) -> bytes:
    return orjson.dumps({"data": None, "error": message})
