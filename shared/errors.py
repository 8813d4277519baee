"""One error family. HTTP edges map it to responses in one handler (shared.http)."""

from __future__ import annotations

from typing import Any


class ChurnsignalError(Exception):
    """Base of every error the project raises on purpose."""

    status_code = 500
    retryable = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


class BadRequest(ChurnsignalError):
    status_code = 400


class Unauthorized(ChurnsignalError):
    status_code = 401


class Forbidden(ChurnsignalError):
    status_code = 403


class NotFound(ChurnsignalError):
    status_code = 404


class PayloadTooLarge(ChurnsignalError):
    status_code = 413


class UnsupportedMediaType(ChurnsignalError):
    status_code = 415


class Unprocessable(ChurnsignalError):
    status_code = 422


class BusUnavailable(ChurnsignalError):
    """The message bus could not durably accept the messages (retryable)."""

    status_code = 503
    retryable = True


class PermanentFailure(ChurnsignalError):
    """Retrying will not help: dead-letter it with the reason."""


class RetryableFailure(ChurnsignalError):
    """Transient: retry with bounded backoff."""

    retryable = True
