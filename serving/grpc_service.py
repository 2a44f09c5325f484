"""gRPC endpoints: ``tensorflow.serving.PredictionService`` and ``tensorflow.serving.ModelService``.

Thin: each method hands the request to :class:`serving.core.ServingCore` and turns a
``ServingError`` into the RPC's status code and message. A call that carries gRPC metadata
``x-request-id`` (the gateway sends the id of the HTTP request it serves) is logged with that id,
its status and its duration, so one request can be followed from the gateway's log into this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent import futures

import grpc

from serving.core import ServingCore
from serving.errors import ServingError
from serving_api import protos

log = logging.getLogger(__name__)


REQUEST_ID_KEY = "x-request-id"
"""gRPC metadata key of the caller's request id."""


def _request_id(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            return value if isinstance(value, str) else None
    return None


def _call(context: grpc.ServicerContext, method, request):
    request_id = _request_id(context)
    start = time.perf_counter()
    status = "OK"
    try:
        return method(request)
    except ServingError as exc:
        status = exc.code.name
        context.abort(exc.code, exc.message)
    except Exception as exc:  # a bug here must still answer, as INTERNAL
        status = "INTERNAL"
        log.exception("unexpected error")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    finally:
        if request_id is not None:
            log.info(
                "%s x-request-id=%s status=%s %.1f ms",
                method.__name__,
                request_id[:64],
                status,
                (time.perf_counter() - start) * 1000,
            )


class PredictionService(protos.prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        """``PredictRequest`` -> ``PredictResponse``; see ``ServingCore.predict``."""
        return _call(context, self._core.predict, request)

    def GetModelMetadata(self, request, context):  # noqa: N802
        """See ``ServingCore.get_model_metadata``."""
        return _call(context, self._core.get_model_metadata, request)


class ModelService(protos.model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        """See ``ServingCore.reload_config``."""
        return _call(context, self._core.reload_config, request)

    def GetModelStatus(self, request, context):  # noqa: N802
        """See ``ServingCore.get_model_status``."""
        return _call(context, self._core.get_model_status, request)


def build_server(
    core: ServingCore,
    port: int,
    max_workers: int,
    max_message_bytes: int,
    host: str = "0.0.0.0",
    extra_options: Sequence[tuple[str, int | str]] = (),
) -> tuple[grpc.Server, int]:
    """A gRPC server with both services, bound but not started.

    Args:
        core: the data plane.
        port: TCP port (0 = any free port).
        max_workers: handler threads (also the number of calls that can wait in a batch).
        max_message_bytes: max send and receive message size, bytes.
        host: interface to bind (TF Serving: all interfaces).
        extra_options: gRPC server arguments from ``--grpc_channel_arguments`` (e.g.
            ``("grpc.max_connection_age_ms", 30000)``: each connection is closed with GOAWAY
            after that age, so clients re-resolve and spread over new replicas); a key given
            here replaces this function's own setting of it.

    Returns:
        (server, bound port).

    Raises:
        RuntimeError: the port cannot be bound.
    """
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Largest HTTP/2 frame (2^24 - 1): a 32-image request (4.8 MB) in fewer frames.
        ("grpc.http2.max_frame_size", 16777215),
    ]
    overridden = {key for key, _ in extra_options}
    options = [item for item in options if item[0] not in overridden] + list(extra_options)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=options,
    )
    protos.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    protos.model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind gRPC port {port}")
    return server, bound
