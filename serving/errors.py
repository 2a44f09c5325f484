"""The one error type of the model server: a gRPC status code plus TF Serving's message.

Raised anywhere in the data plane; the gRPC service aborts with ``code`` and the REST layer maps the
same code to an HTTP status (:data:`HTTP_STATUS`), so both transports agree.
"""

from __future__ import annotations

import grpc

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""HTTP status per gRPC code for the REST API (anything else: 500)."""


class ServingError(Exception):
    """A request the server refuses or cannot complete.

    Attributes:
        code: the ``grpc.StatusCode`` TF Serving returns for this case.
        message: TF Serving's message text where it has one (cited where raised).
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """HTTP status of this error on the REST API."""
        return HTTP_STATUS.get(self.code, 500)


class LoadError(RuntimeError):
    """A version folder that is not a loadable SavedModel (missing files, corrupt, bad warm-up)."""


def invalid_argument(message: str) -> ServingError:
    """Shorthand for an ``INVALID_ARGUMENT`` error."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """Shorthand for a ``NOT_FOUND`` error."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)
