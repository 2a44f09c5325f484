"""The gateway's one error type and its mapping to HTTP, registered once on the Flask app.

Every failure leaves the gateway as ``{"error": {"code": ..., "message": ...}}`` with the HTTP
status of its code (table in docs/CONTRACTS.md section 4): a :class:`GatewayError` raised anywhere,
a :class:`preprocessing.ImageError` from decoding, a werkzeug HTTP error (unknown route, wrong
method, body over ``MAX_CONTENT_LENGTH``) or an unexpected exception (500, logged with traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from preprocessing import ImageError

log = logging.getLogger(__name__)

STATUS_BY_CODE: Mapping[str, int] = {
    "empty_file": 400,
    "not_an_image": 400,
    "corrupt_image": 400,
    "missing_field": 400,
    "invalid_parameter": 400,
    "invalid_base64": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "image_too_large": 413,
    "too_many_images": 413,
    "unsupported_format": 415,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "serving_error": 502,
    "serving_unavailable": 503,
    "deadline_exceeded": 504,
}
"""HTTP status of every public error code (docs/CONTRACTS.md section 4)."""

# werkzeug's own HTTP errors (raised before or around our views) and the code each becomes.
_CODE_BY_WERKZEUG_STATUS: Mapping[int, str] = {
    400: "invalid_parameter",  # e.g. a malformed multipart body
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",  # Flask-Limiter's RateLimitExceeded
}


class GatewayError(Exception):
    """A failure with a public error code, an HTTP status and a message for the caller.

    Args:
        code: one of :data:`STATUS_BY_CODE`.
        message: human-readable explanation, returned to the caller (never a secret or a trace).
        status: HTTP status; defaults to the code's status from :data:`STATUS_BY_CODE`.
        headers: extra response headers, e.g. ``{"Retry-After": "5"}``.

    Raises:
        KeyError: ``code`` is not a public error code and no ``status`` was given.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS_BY_CODE[code] if status is None else status
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON error object, ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}

    def to_response(self) -> Response:
        """The Flask response: ``{"error": {...}}`` with this error's status and headers."""
        response = jsonify(error=self.body())
        response.status_code = self.status
        response.headers.update(self.headers)
        return response

    def __repr__(self) -> str:
        return f"GatewayError({self.code!r}, {self.message!r}, {self.status})"


def from_image_error(exc: ImageError) -> GatewayError:
    """Map a preprocessing failure to its public error (same code, status from the table).

    Args:
        exc: raised by ``preprocessing.decode`` / ``open_image``.

    Returns:
        The GatewayError; unknown ImageError subclasses become ``corrupt_image`` (400).
    """
    code = exc.code if exc.code in STATUS_BY_CODE else "corrupt_image"
    return GatewayError(code, str(exc))


def from_http_exception(exc: HTTPException) -> GatewayError:
    """Map a werkzeug HTTP error (404 route, 405 method, 413 body ...) to a GatewayError.

    Args:
        exc: the werkzeug exception; its status code picks the public code.

    Returns:
        The GatewayError, keeping werkzeug's status and its ``Allow`` header for 405.
    """
    status = exc.code or 500
    code = _CODE_BY_WERKZEUG_STATUS.get(status)
    if code is None:  # an unlisted werkzeug status: answer with the contract's status of the code
        code = "internal_error" if status >= 500 else "invalid_parameter"
        status = STATUS_BY_CODE[code]
    headers = {}
    if status == 405:
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    message = exc.description or exc.name
    if status == 429:
        message = f"rate limit exceeded ({message}); retry after the Retry-After header's seconds"
    return GatewayError(code, message, status=status, headers=headers)


def register(app: Flask, on_error: Callable[[GatewayError], None] | None = None) -> None:
    """Register the JSON error handlers on ``app``, once for every kind of failure.

    Args:
        app: the Flask app.
        on_error: called with every GatewayError produced (metrics of rejected inputs).
    """

    def respond(error: GatewayError) -> Response:
        if on_error is not None:
            on_error(error)
        return error.to_response()

    @app.errorhandler(GatewayError)
    def _gateway_error(exc: GatewayError) -> Response:
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return respond(exc)

    @app.errorhandler(ImageError)
    def _image_error(exc: ImageError) -> Response:
        return respond(from_image_error(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return respond(from_http_exception(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling the request")
        return respond(GatewayError("internal_error", "internal error; see the gateway log"))
