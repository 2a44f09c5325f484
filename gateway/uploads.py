"""HTTP request -> inputs: the uploaded image bytes and the query parameters. No model logic.

``/predict`` takes multipart field ``image`` or a raw body whose ``Content-Type`` is ``image/*``
(or ``application/octet-stream``) or JSON ``{"image": {"b64": ...}}``; ``/predict_batch`` takes
repeated multipart field ``images`` or JSON ``{"instances": [{"b64": ...}, ...]}`` (base64 rules
in :mod:`gateway.json_input`).
Body size is bounded by Flask's ``MAX_CONTENT_LENGTH``: werkzeug answers 413 for a declared
``Content-Length`` over it and while parsing multipart (chunked included). A raw body without
``Content-Length`` (chunked) is read here instead: werkzeug's stream would stop at the limit without
an error, so :func:`_raw_body` reads one byte past it and refuses the body if that byte arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Request
from werkzeug.exceptions import ClientDisconnected

from gateway import json_input
from gateway.errors import ErrorCode, GatewayError, body_too_large
from gateway.serving_client import VersionSelector
from gateway.settings import Settings

_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_RAW_TYPES = ("application/octet-stream",)
_JSON = "application/json"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name as sent (or None for a raw or JSON body) and its bytes, or
    the error that makes this one item unreadable (a JSON instance whose base64 does not decode).
    """

    filename: str | None
    data: bytes
    error: GatewayError | None = None


@dataclass(frozen=True)
class QueryOptions:
    """The query parameters of a prediction request.

    Attributes:
        top_k: length of the top-k list, >= 1.
        selector: the model version asked for (``version`` or ``version_label``).
    """

    top_k: int
    selector: VersionSelector


def query_options(request: Request, settings: Settings) -> QueryOptions:
    """Parse ``top_k``, ``version`` and ``version_label``.

    Args:
        request: the Flask request.
        settings: for the default ``top_k``.

    Returns:
        The options; ``top_k`` defaults to ``TOP_K``.

    Raises:
        GatewayError: ``invalid_parameter`` (400) for a ``top_k`` that is not an integer in
            1..10**18-1 (larger than the class count lists every class), a version that is not an
            integer in 0..10**18-1, a label outside ``[A-Za-z0-9_.-]{1,64}``, or both a
            version and a label (TF Serving's ModelSpec takes one of them). The messages state
            the bounds in words, not as the 18-digit ceiling; any of the three given more
            than once (``?top_k=3&top_k=5``: which one was meant is unknown).
    """
    args = request.args
    for name in json_input.QUERY_PARAMETERS:
        given = args.getlist(name)
        if len(given) > 1:
            raise GatewayError(
                ErrorCode.INVALID_PARAMETER,
                f"{name} is given {len(given)} times in the query; give it once",
            )
    top_k = _int_param(
        args.get("top_k"),
        "top_k",
        minimum=1,
        default=settings.top_k,
        expected="a whole number from 1 to the number of classes (larger values, up to 18 digits, "
        "list every class)",
    )
    version = _int_param(
        args.get("version"),
        "version",
        minimum=0,
        default=None,
        expected="a non-negative whole number (a model version, up to 18 digits)",
    )
    label = args.get("version_label")
    if label is not None and not _LABEL.match(label):
        raise GatewayError(
            ErrorCode.INVALID_PARAMETER, "version_label must match [A-Za-z0-9_.-]{1,64}"
        )
    if version is not None and label is not None:
        raise GatewayError(ErrorCode.INVALID_PARAMETER, "give version or version_label, not both")
    return QueryOptions(top_k=top_k, selector=VersionSelector(version=version, label=label))


_MAX_DIGITS = 18  # every accepted value fits TF Serving's int64 version numbers


def _int_param(
    raw: str | None, name: str, *, minimum: int, default: int | None, expected: str
) -> int | None:
    """``raw`` as an int of at most ``_MAX_DIGITS`` ASCII digits and at least ``minimum``;
    ``expected`` words the accepted values for the message (the 18-digit ceiling means nothing to
    a caller). Only ``0-9``: no sign, no spaces, no other script's digits (which Python's ``int``
    would take)."""
    if raw is None:
        return default
    if not re.fullmatch(rf"[0-9]{{1,{_MAX_DIGITS}}}", raw) or int(raw) < minimum:
        raise GatewayError(
            ErrorCode.INVALID_PARAMETER, f"{name} must be {expected}, got {raw[:40]!r}"
        )
    return int(raw)


def _missing_file(request: Request, name: str) -> GatewayError:
    if name in request.form:
        return GatewayError(
            ErrorCode.MISSING_FIELD,
            f"multipart field {name!r} must be a file upload "
            "(a part with a filename, e.g. curl -F "
            f"{name}=@photo.jpg), not a text field",
        )
    return GatewayError(ErrorCode.MISSING_FIELD, f"multipart field {name!r} is missing")


def _raw_body(request: Request, settings: Settings) -> bytes:
    """The raw request body, refused with 413 when it is longer than ``MAX_BODY_BYTES``.

    With a ``Content-Length`` werkzeug already refused one over the limit and reads exactly that
    many bytes. Without one, the body is only readable when the server terminates the stream
    (``wsgi.input_terminated``: werkzeug's dev server and gunicorn for chunked bodies); it is read
    here from the raw input, at most ``limit + 1`` bytes, so an over-long body is never truncated
    into an acceptable one and never held in memory beyond the limit.
    """
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return _check_size(request.get_data(cache=False), settings)
    limit = settings.max_body_bytes
    body = bytearray()
    stream = request.input_stream
    while len(body) <= limit:
        try:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - len(body)))
        except (OSError, ValueError):
            raise ClientDisconnected() from None
        if not chunk:
            break
        body += chunk
    return _check_size(bytes(body), settings)


def _check_size(data: bytes, settings: Settings) -> bytes:
    if len(data) > settings.max_body_bytes:
        raise body_too_large(settings.max_body_bytes)
    return data


def single_image(request: Request, settings: Settings) -> Upload:
    """The image of a ``/predict`` request.

    Args:
        request: multipart with one ``image`` field, a raw ``image/*`` body or JSON
            ``{"image": {"b64": "..."}}``.
        settings: for the byte limit.

    Returns:
        The upload (filename None for a raw or JSON body).

    Raises:
        GatewayError: ``missing_field`` (400) multipart without an ``image`` file (a text field
            named ``image`` is told to be a file upload) or no body; JSON errors of
            :func:`gateway.json_input.single_image`;
            ``invalid_parameter`` (400) more than one ``image``, or a form field named as a
            query parameter (``top_k``, ``version``, ``version_label``); ``unsupported_media_type``
            (415) another content type; ``payload_too_large`` (413).
    """
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        json_input.refuse_options([*request.form, *request.files], "a form field", "/predict")
        files = request.files.getlist("image")
        if not files:
            raise _missing_file(request, "image")
        if len(files) > 1:
            raise GatewayError(
                ErrorCode.INVALID_PARAMETER,
                "send one 'image' to /predict; use /predict_batch for several",
            )
        return Upload(files[0].filename, _check_size(files[0].read(), settings))
    if mimetype.startswith("image/") or mimetype in _RAW_TYPES:
        return Upload(None, _raw_body(request, settings))
    if mimetype == _JSON:
        body = _raw_body(request, settings)
        return Upload(None, json_input.single_image(body))
    if not mimetype and not request.content_length:
        raise GatewayError(
            ErrorCode.MISSING_FIELD,
            "send an image as multipart field 'image', as the body with an image/* Content-Type "
            'or as JSON {"image": {"b64": "..."}}',
        )
    raise GatewayError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {mimetype!r} is not accepted; send multipart/form-data, image/* or "
        "application/json",
    )


def batch_images(request: Request, settings: Settings) -> list[Upload]:
    """The images of a ``/predict_batch`` request, in the order they were sent.

    Args:
        request: multipart with one or more ``images`` fields, or JSON
            ``{"instances": [{"b64": "..."}, ...]}``.
        settings: byte and count limits.

    Returns:
        The uploads with their filenames (None for JSON instances); a JSON instance whose base64
        does not decode carries its ``invalid_base64`` error and no bytes.

    Raises:
        GatewayError: ``unsupported_media_type`` (415) neither multipart nor JSON; JSON errors of
            :func:`gateway.json_input.batch_images`; ``invalid_parameter`` (400) a form field
            named as a query parameter; ``missing_field`` (400) no ``images`` file;
            ``too_many_images`` (413) more than ``MAX_BATCH_IMAGES``; ``payload_too_large`` (413).
    """
    if request.mimetype == _JSON:
        images = json_input.batch_images(
            _raw_body(request, settings), max_images=settings.max_batch_images
        )
        return [
            Upload(None, b"", item) if isinstance(item, GatewayError) else Upload(None, item)
            for item in images
        ]
    if request.mimetype != "multipart/form-data":
        raise GatewayError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "send the images as repeated multipart/form-data field 'images' or as JSON "
            '{"instances": [{"b64": "..."}, ...]}',
        )
    json_input.refuse_options([*request.form, *request.files], "a form field", "/predict_batch")
    files = request.files.getlist("images")
    if not files:
        raise _missing_file(request, "images")
    if len(files) > settings.max_batch_images:
        raise GatewayError(
            ErrorCode.TOO_MANY_IMAGES,
            f"{len(files)} images sent; the limit is {settings.max_batch_images} per request",
        )
    uploads = [Upload(f.filename, f.read()) for f in files]
    if sum(len(u.data) for u in uploads) > settings.max_body_bytes:
        raise body_too_large(settings.max_body_bytes, what="the images")
    return uploads
