"""The gateway's only gRPC code: a client of TF Serving's PredictionService and ModelService.

One channel per client (the app creates one client per process) and it is reused by every
request. Each call carries a deadline. Retries are gRPC's own retry policy (gRFC A6, set through
the channel's service config), bounded and with exponential backoff and jitter, for ``UNAVAILABLE``
only: the one status that means the request never reached a model. Message size limits are set
explicitly on both directions. gRPC failures leave this module as :class:`GatewayError`. The id of
the HTTP request being served (:mod:`gateway.request_ids`) travels with every call as gRPC metadata
``x-request-id``, so the model server's log can be matched with the gateway's.

The target is any gRPC target (``host:port``, ``dns:///name:port``, ``ipv4:a:port,b:port``) and
the load-balancing policy comes from ``SERVING_LB_POLICY``: with ``round_robin`` the channel keeps
a connection to every address the target resolves to, each call goes to the next ready one, and a
retry after ``UNAVAILABLE`` is picked anew, so it lands on another replica than the one that
failed. A Kubernetes headless Service resolves to every ready model-server pod; TF Serving's
``grpc.max_connection_age_ms`` makes the channel re-resolve, so new pods get calls.

Messages come from :mod:`serving_api.protos` (no TensorFlow runtime); tensors are converted with
:mod:`serving_api.tensors`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
import numpy as np

from gateway import request_ids
from gateway.errors import ErrorCode, GatewayError
from gateway.settings import Settings
from serving_api import protos
from serving_api.tensors import TensorConversionError, to_ndarray, to_tensor_proto

log = logging.getLogger(__name__)

_PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
_MODEL_SERVICE = "tensorflow.serving.ModelService"

AVAILABLE = "AVAILABLE"


@dataclass(frozen=True)
class VersionSelector:
    """Which version of the model a request asks for (TF Serving's ``ModelSpec`` oneof).

    Attributes:
        version: a pinned version number, or None.
        label: a version label from TF Serving's model config (e.g. ``"stable"``), or None.
        At most one is set; neither means the latest available version.
    """

    version: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("give either a version or a version label, not both")


LATEST = VersionSelector()


@dataclass(frozen=True)
class PredictResult:
    """A Predict response.

    Attributes:
        model_name: the model that answered (response ``model_spec.name``).
        version: the version that answered (response ``model_spec.version``).
        outputs: output key -> array, e.g. ``probabilities`` float32 ``(n, num_classes)``.
    """

    model_name: str
    version: int
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: a version and its state (``AVAILABLE``, ``LOADING`` ...)."""

    version: int
    state: str
    error: str


def _service_config(settings: Settings) -> str:
    config: dict = {
        # Which addresses of the target get calls: pick_first keeps one connection; round_robin
        # connects to every resolved address and spreads calls (and retries) over the ready ones.
        "loadBalancingConfig": [{settings.lb_policy: {}}],
        "methodConfig": [
            {
                "name": [{"service": _PREDICTION_SERVICE}, {"service": _MODEL_SERVICE}],
            }
        ],
    }
    if settings.retries > 0:
        config["methodConfig"][0]["retryPolicy"] = {
            "maxAttempts": settings.retries + 1,
            "initialBackoff": f"{settings.retry_backoff_seconds:.3f}s",
            "maxBackoff": f"{max(settings.retry_backoff_seconds * 8, 1.0):.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps(config)


def channel_options(settings: Settings) -> list[tuple[str, int | str]]:
    """The gRPC channel options: size limits, load balancing, retry policy and reconnect backoff.

    Args:
        settings: gateway settings (message size limit, load-balancing policy, retries, backoff).

    Returns:
        ``(key, value)`` pairs for ``grpc.insecure_channel``. The retry buffer is raised to the
        message limit because gRPC does not retry a call whose request is larger than the buffer
        (default 256 KiB, smaller than one 224x224 batch).
    """
    size = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(settings)),
        ("grpc.per_rpc_retry_buffer_size", size),
        # Reconnect soon after TF Serving (re)starts: gRPC's default backoff grows to 120 s. A
        # gateway started beside its server (make run/serve, a pod) connects within ~0.5 s of
        # the server listening; two connect attempts a second to a down server cost nothing.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]


class ServingClient:
    """TF Serving's Predict, GetModelMetadata and GetModelStatus with the gateway's error mapping.

    Args:
        settings: address, model name, signature, deadline, retries and size limits.
        on_call: called after every RPC with ``(method, seconds, grpc status name)``; the app uses
            it for the serving round-trip histogram.

    Thread-safe: gRPC channels and stubs may be shared by threads.
    """

    def __init__(
        self, settings: Settings, on_call: Callable[[str, float, str], None] | None = None
    ) -> None:
        self.settings = settings
        self._on_call = on_call
        self._channel = grpc.insecure_channel(
            settings.grpc_address, options=channel_options(settings)
        )
        self._prediction = protos.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = protos.model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel; later calls fail with ``serving_unavailable``."""
        self._channel.close()

    def _model_spec(self, selector: VersionSelector, *, signature: bool) -> object:
        spec = protos.model_pb2.ModelSpec(name=self.settings.model_name)
        if signature:
            spec.signature_name = self.settings.signature_name
        if selector.version is not None:
            spec.version.value = selector.version
        elif selector.label is not None:
            spec.version_label = selector.label
        return spec

    def _call(
        self, method: str, rpc: Callable, request: object, selector: VersionSelector = LATEST
    ) -> object:
        start = time.perf_counter()
        status = "OK"
        request_id = request_ids.current()
        metadata = ((request_ids.GRPC_METADATA_KEY, request_id),) if request_id else None
        try:
            return rpc(request, timeout=self.settings.deadline_seconds, metadata=metadata)
        except grpc.RpcError as exc:
            status = exc.code().name if exc.code() else "UNKNOWN"
            error = self._map_error(method, exc)
        finally:
            if self._on_call is not None:
                self._on_call(method, time.perf_counter() - start, status)
        if error.code == ErrorCode.NOT_FOUND and selector.version is not None:
            error = self._version_not_served(selector.version, error)
        raise error

    def _version_not_served(self, version: int, error: GatewayError) -> GatewayError:
        """A NOT_FOUND for a pinned version, told which versions are AVAILABLE (GetModelStatus).

        A caller who pinned a version the server does not serve can only guess another one
        otherwise. If the status cannot be read (e.g. the model itself is unknown), ``error`` is
        returned unchanged.
        """
        try:
            statuses = self.get_status()
        except GatewayError:
            return error
        available = sorted(s.version for s in statuses if s.state == AVAILABLE)
        served = ", ".join(str(v) for v in available) or "none"
        return GatewayError(
            ErrorCode.NOT_FOUND,
            f"model {self.settings.model_name!r} has no available version {version}; "
            f"available versions: {served}",
        )

    def _map_error(self, method: str, exc: grpc.RpcError) -> GatewayError:
        """gRPC status -> public error. Codes as TF Serving returns them (server_core.cc)."""
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return GatewayError(
                ErrorCode.SERVING_UNAVAILABLE,
                f"TF Serving at {self.settings.grpc_address} is unavailable ({details})",
                headers={"Retry-After": str(self.settings.retry_after_seconds)},
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return GatewayError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"TF Serving did not answer {method} within {self.settings.deadline_seconds} s",
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return GatewayError(ErrorCode.NOT_FOUND, f"model or version not found: {details}")
        if code == grpc.StatusCode.INVALID_ARGUMENT and "version label" in details:
            # TF Serving: InvalidArgument("Unrecognized servable version label: X").
            return GatewayError(ErrorCode.NOT_FOUND, details)
        log.error("TF Serving %s failed: %s: %s", method, code.name if code else code, details)
        return GatewayError(
            ErrorCode.SERVING_ERROR,
            f"TF Serving rejected {method}: {code.name if code else 'UNKNOWN'}",
        )

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        selector: VersionSelector = LATEST,
        output_filter: Iterable[str] = (),
    ) -> PredictResult:
        """Call ``PredictionService/Predict`` on the configured signature.

        Args:
            inputs: input key -> array (e.g. ``images`` uint8 ``(n, H, W, 3)``).
            selector: the version to ask for.
            output_filter: output keys to compute; empty means all outputs.

        Returns:
            The outputs as arrays with the answering model name and version.

        Raises:
            GatewayError: ``serving_unavailable`` (503), ``deadline_exceeded`` (504),
                ``not_found`` (404; for a pinned version the message lists the AVAILABLE
                versions) or ``serving_error`` (502, also for a response whose tensors do not
                convert).
        """
        request = protos.predict_pb2.PredictRequest(
            model_spec=self._model_spec(selector, signature=True), output_filter=list(output_filter)
        )
        for key, array in inputs.items():
            request.inputs[key].CopyFrom(to_tensor_proto(array))
        response = self._call("Predict", self._prediction.Predict, request, selector)
        try:
            outputs = {key: to_ndarray(tensor) for key, tensor in response.outputs.items()}
        except (TensorConversionError, ValueError) as exc:  # bad dtype, content size mismatch
            raise GatewayError(
                ErrorCode.SERVING_ERROR, f"Predict returned a malformed tensor: {exc}"
            ) from None
        return PredictResult(
            model_name=response.model_spec.name,
            version=int(response.model_spec.version.value),
            outputs=outputs,
        )

    def get_signature(self, selector: VersionSelector = LATEST) -> tuple[int, object]:
        """Call ``PredictionService/GetModelMetadata`` and return the configured signature.

        Args:
            selector: the version to describe.

        Returns:
            ``(version, SignatureDef)``: the version described and its signature
            (``tensorflow.SignatureDef`` with ``inputs``/``outputs`` maps of ``TensorInfo``).

        Raises:
            GatewayError: as :meth:`predict`; ``serving_error`` if the signature is missing.
        """
        request = protos.get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(selector, signature=False), metadata_field=["signature_def"]
        )
        response = self._call(
            "GetModelMetadata", self._prediction.GetModelMetadata, request, selector
        )
        signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise GatewayError(
                ErrorCode.SERVING_ERROR, "GetModelMetadata returned no signature_def"
            )
        name = self.settings.signature_name
        if name not in signature_map.signature_def:
            raise GatewayError(ErrorCode.SERVING_ERROR, f"the model has no signature {name!r}")
        return int(response.model_spec.version.value), signature_map.signature_def[name]

    def get_status(self, selector: VersionSelector = LATEST) -> list[VersionStatus]:
        """Call ``ModelService/GetModelStatus``.

        Args:
            selector: a version to ask about; LATEST lists every version TF Serving knows.

        Returns:
            One entry per version, in the order TF Serving lists them.

        Raises:
            GatewayError: as :meth:`predict`.
        """
        request = protos.get_model_status_pb2.GetModelStatusRequest(
            model_spec=self._model_spec(selector, signature=False)
        )
        response = self._call("GetModelStatus", self._models.GetModelStatus, request)
        state_name = protos.get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                version=int(s.version), state=state_name(s.state), error=s.status.error_message
            )
            for s in response.model_version_status
        ]
