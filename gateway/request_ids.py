"""Request ids: accept a caller's ``X-Request-Id`` when it is short and plain, else make one.

The id of the request being handled lives in a :class:`contextvars.ContextVar`, so code without
Flask (the serving client, the log formatter) can read it: the serving client sends it to TF
Serving as gRPC metadata ``x-request-id``, and every log line of the request carries it.
"""

from __future__ import annotations

import contextvars
import re
import uuid

HEADER = "X-Request-Id"
"""HTTP header carrying the id, in requests and responses."""

GRPC_METADATA_KEY = "x-request-id"
"""gRPC metadata key carrying the id to the model server (gRPC keys are lower case)."""

_PLAIN = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def accept(sent: str | None) -> str:
    """The id for a request: the caller's if it is plain, else a new one.

    Args:
        sent: the ``X-Request-Id`` header as received, or None.

    Returns:
        ``sent`` if it is 1..64 characters of ``[A-Za-z0-9._:-]`` (safe in logs, headers and
        metadata); otherwise a new 32-character hex UUID4.
    """
    if sent is not None and _PLAIN.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def current() -> str | None:
    """The id of the request this thread is handling, None outside a request."""
    return _current.get()


def bind(request_id: str | None) -> contextvars.Token:
    """Make ``request_id`` the current id; pass the token to :func:`unbind` when done."""
    return _current.set(request_id)


def unbind(token: contextvars.Token) -> None:
    """Restore the id that was current before :func:`bind`."""
    _current.reset(token)
