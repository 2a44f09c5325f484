"""The gateway's one error type and its mapping to HTTP, registered once on the Flask app.

Every failure leaves the gateway as ``{"error": {"code": ..., "message": ...}}`` with the HTTP
status of its code (table in docs/CONTRACTS.md section 4): a :class:`GatewayError` raised anywhere,
a :class:`preprocessing.ImageError` from decoding, a werkzeug HTTP error (unknown route, wrong
method, body over ``MAX_CONTENT_LENGTH``, answered with the limit and its setting
``MAX_BODY_BYTES``) or an unexpected exception (500, logged with traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from preprocessing import ImageError, ImageTooLargeError

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    """Every public error code, each with its HTTP status (docs/CONTRACTS.md section 4).

    Raise with a member (``GatewayError(ErrorCode.SERVING_ERROR, ...)``): a misspelt member is an
    unknown attribute that tests/test_gateway_unit.py finds in every module without running it,
    where a misspelt string used to become a KeyError, i.e. a 500, inside an error path. Members
    are strings, so they compare equal to and serialise as their value.
    """

    EMPTY_FILE = "empty_file", 400
    NOT_AN_IMAGE = "not_an_image", 400
    CORRUPT_IMAGE = "corrupt_image", 400
    MISSING_FIELD = "missing_field", 400
    INVALID_PARAMETER = "invalid_parameter", 400
    INVALID_BASE64 = "invalid_base64", 400
    UNAUTHORIZED = "unauthorized", 401
    NOT_FOUND = "not_found", 404
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    PAYLOAD_TOO_LARGE = "payload_too_large", 413
    IMAGE_TOO_LARGE = "image_too_large", 413
    TOO_MANY_IMAGES = "too_many_images", 413
    UNSUPPORTED_FORMAT = "unsupported_format", 415
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415
    RATE_LIMITED = "rate_limited", 429
    INTERNAL_ERROR = "internal_error", 500
    SERVING_ERROR = "serving_error", 502
    SERVING_UNAVAILABLE = "serving_unavailable", 503
    DEADLINE_EXCEEDED = "deadline_exceeded", 504

    def __new__(cls, value: str, status: int) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    status: int
    """The HTTP status this code is answered with."""


STATUS_BY_CODE: Mapping[str, int] = {code.value: code.status for code in ErrorCode}
"""HTTP status of every public error code, by its string value."""

# werkzeug's own HTTP errors (raised before or around our views) and the code each becomes.
_CODE_BY_WERKZEUG_STATUS: Mapping[int, ErrorCode] = {
    400: ErrorCode.INVALID_PARAMETER,  # e.g. a malformed multipart body
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,  # Flask-Limiter's RateLimitExceeded
}


class GatewayError(Exception):
    """A failure with a public error code, an HTTP status and a message for the caller.

    Args:
        code: an :class:`ErrorCode` member.
        message: human-readable explanation, returned to the caller (never a secret or a trace).
        status: HTTP status; defaults to the code's own.
        headers: extra response headers, e.g. ``{"Retry-After": "5"}``.

    Raises:
        TypeError: ``code`` is not an :class:`ErrorCode` (a plain string is refused even when it
            names a code, so every raise site stays checkable).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(code, ErrorCode):
            raise TypeError(f"GatewayError needs an ErrorCode member, got {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = code.status if status is None else status
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON error object, ``{"code": ..., "message": ...}``."""
        return {"code": self.code.value, "message": self.message}

    def to_response(self) -> Response:
        """The Flask response: ``{"error": {...}}`` with this error's status and headers."""
        response = jsonify(error=self.body())
        response.status_code = self.status
        response.headers.update(self.headers)
        return response

    def __repr__(self) -> str:
        return f"GatewayError({self.code!r}, {self.message!r}, {self.status})"


BODY_LIMIT_SETTING = "MAX_BODY_BYTES"
"""The setting (environment variable) that bounds a request body; named in 413 messages."""


IMAGE_LIMIT_SETTING = "MAX_IMAGE_PIXELS"
"""The setting that bounds an image's declared width * height; named in image_too_large messages."""


def from_image_error(exc: ImageError) -> GatewayError:
    """Map a preprocessing failure to its public error (same code, status from the table).

    Args:
        exc: raised by ``preprocessing.decode`` / ``open_image``.

    Returns:
        The GatewayError; unknown ImageError subclasses become ``corrupt_image`` (400). An image
        over the pixel limit the gateway passed (``MAX_IMAGE_PIXELS``) has that setting named.
    """
    code = ErrorCode(exc.code) if exc.code in STATUS_BY_CODE else ErrorCode.CORRUPT_IMAGE
    message = str(exc)
    if isinstance(exc, ImageTooLargeError) and exc.limit is not None:
        message = f"{message} (the gateway's {IMAGE_LIMIT_SETTING} setting)"
    return GatewayError(code, message)


def _bytes_in_words(count: int) -> str:
    if count >= 1 << 20:
        return f"{count} bytes = {count / (1 << 20):.3g} MiB"
    if count >= 1 << 10:
        return f"{count} bytes = {count / (1 << 10):.3g} KiB"
    return f"{count} bytes"


def body_too_large(
    limit: int, size: int | None = None, what: str = "the request body"
) -> GatewayError:
    """The 413 ``payload_too_large`` error for a body over ``MAX_BODY_BYTES``.

    Args:
        limit: the limit in bytes (``MAX_BODY_BYTES``).
        size: the body's size in bytes, when known (a declared ``Content-Length``).
        what: what is too large, e.g. ``the images``.

    Returns:
        The error; its message states the limit in bytes and MiB (or KiB) and names the setting.
    """
    sent = f" ({size} bytes)" if size is not None else ""
    return GatewayError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"{what}{sent} is over the limit of {_bytes_in_words(limit)} "
        f"(the gateway's {BODY_LIMIT_SETTING} setting)",
    )


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
        code = ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.INVALID_PARAMETER
        status = code.status
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
        error = from_http_exception(exc)
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if error.status == 413 and limit is not None:
            # werkzeug's 413 says only "exceeds the capacity limit"; say which limit. A declared
            # length within it means a multipart form limit fired instead (parts, text fields);
            # without a declared length (chunked) the body limit is the one a caller meets.
            size = request.content_length
            if size is None or size > limit:
                error = body_too_large(limit, size)
            else:
                error = GatewayError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"the multipart form is over its limits: at most "
                    f"{app.config['MAX_FORM_PARTS']} parts and "
                    f"{app.config['MAX_FORM_MEMORY_SIZE']} bytes per text field; send images "
                    "as file parts",
                )
        return respond(error)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling the request")
        return respond(
            GatewayError(ErrorCode.INTERNAL_ERROR, "internal error; see the gateway log")
        )
