"""Typed errors. Each says whether retrying can help, and maps to an HTTP status."""

from __future__ import annotations


class LiveDHError(Exception):
    """Base of every error livedh raises on purpose."""

    retryable: bool = False
    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"code": -1, "error": self.code, "msg": self.message, "retryable": self.retryable}


class InvalidInputError(LiveDHError):
    """The caller sent something we cannot use (bad JSON, SDP, audio, text)."""

    http_status = 400
    code = "invalid_input"


class PayloadTooLargeError(InvalidInputError):
    http_status = 413
    code = "payload_too_large"


class UnsupportedMediaError(InvalidInputError):
    http_status = 415
    code = "unsupported_media"


class RequestTimeoutError(InvalidInputError):
    """The client took too long to send its request body; the connection is closed."""

    http_status = 408
    code = "request_timeout"


class UnauthorizedError(LiveDHError):
    """The route needs a credential (an API key or a session token) that is missing or wrong."""

    http_status = 401
    code = "unauthorized"


class ForbiddenError(LiveDHError):
    """The caller is known but may not do this (a cross-site origin, a non-loopback address)."""

    http_status = 403
    code = "forbidden"


class RateLimitedError(LiveDHError):
    """Too many requests from one client (or one session); ``retry_after`` seconds to wait."""

    retryable = True
    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundError(LiveDHError):
    http_status = 404
    code = "not_found"


class ConflictError(LiveDHError):
    """The request clashes with the current state (an avatar already being built)."""

    retryable = True
    http_status = 409
    code = "conflict"


class CapacityError(LiveDHError):
    """The server is full; try again later."""

    retryable = True
    http_status = 503
    code = "capacity"


class NotConfiguredError(LiveDHError):
    """A feature needs configuration (an LLM endpoint, a model file) that is missing."""

    http_status = 409
    code = "not_configured"


class ModelFileError(LiveDHError):
    """A weights or voice file is missing or does not match the architecture."""

    code = "model_file"


class ProviderError(LiveDHError):
    """An external provider (TTS service, LLM endpoint) failed."""

    http_status = 502
    code = "provider_error"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class MissingDependencyError(LiveDHError):
    """An optional provider's package is not installed."""

    code = "missing_dependency"

    def __init__(self, package: str, extra: str | None = None) -> None:
        hint = f"pip install 'livedh[{extra}]'" if extra else "pip install -e . (or make setup)"
        super().__init__(f"{package} is not installed; install it with: {hint}")
