"""The data plane: TF Serving's Predict, GetModelMetadata and GetModelStatus on protobuf messages.

Transport-neutral: the gRPC service and the REST routes only translate to and from these calls.
Behaviour and messages follow TF Serving (``tensorflow_serving/servables/tensorflow/``
``predict_impl.cc``, ``get_model_metadata_impl.cc``, ``model_servers/get_model_status_impl.cc``).
"""

from __future__ import annotations

import time

from serving.config import ConfigError, models_from_proto
from serving.errors import ServingError, invalid_argument
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving_api import protos, tensors

SIGNATURE_DEF_FIELD = "signature_def"
"""The one ``GetModelMetadataRequest.metadata_field`` supported (TF Serving's ``kSignatureDef``)."""


def resolve_spec(manager: ModelManager, spec):
    """The handle a ``ModelSpec`` names (see ``ModelManager.handle`` for errors).

    Raises:
        ServingError: INVALID_ARGUMENT ``ModelSpec has no name specified.`` (``server_core.cc``)
            and the manager's NOT_FOUND / label errors.
    """
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return manager.handle(spec.name, version=int(spec.version.value))
    if choice == "version_label":
        return manager.handle(spec.name, label=spec.version_label)
    return manager.handle(spec.name)


class ServingCore:
    """Answers TF Serving API requests from the models a :class:`ModelManager` has loaded.

    Args:
        manager: the loaded models.
        metrics: request counters.
    """

    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def _count(self, request, api: str, error: ServingError | None) -> None:
        name = request.model_spec.name if request.HasField("model_spec") else ""
        status = "OK" if error is None else error.code.name
        self.metrics.requests.labels(name, api, status).inc()

    def predict(self, request):
        """``PredictionService.Predict``.

        Args:
            request: ``PredictRequest``.

        Returns:
            ``PredictResponse`` whose ``model_spec`` names the model, the version that answered
            and the signature; outputs packed with ``tensor_content`` (strings in ``string_val``).

        Raises:
            ServingError: INVALID_ARGUMENT ``Missing ModelSpec``; the resolution, signature and
                input errors of :func:`resolve_spec` and ``Servable.prepare``; batching errors.
        """
        start = time.perf_counter()
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            handle = resolve_spec(self.manager, request.model_spec)
            servable = handle.servable
            call = servable.prepare(
                request.model_spec.signature_name, request.inputs, request.output_filter
            )
            outputs = handle.run(call)
            if handle.batcher is None:
                self.metrics.model_runs.labels(servable.name, str(servable.version)).inc()
        except ServingError as exc:
            self._count(request, "predict", exc)
            raise
        response = protos.predict_pb2.PredictResponse()
        spec = response.model_spec
        spec.name = request.model_spec.name
        spec.version.value = servable.version
        spec.signature_name = call.signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tensors.to_tensor_proto(array))
        self._count(request, "predict", None)
        self.metrics.latency.labels(spec.name, "predict").observe(time.perf_counter() - start)
        return response

    def get_model_metadata(self, request):
        """``PredictionService.GetModelMetadata``.

        Args:
            request: ``GetModelMetadataRequest`` with ``metadata_field: "signature_def"``.

        Returns:
            ``GetModelMetadataResponse``: ``model_spec`` (name, version) and
            ``metadata["signature_def"]`` = ``Any`` packing a ``SignatureDefMap`` with every
            signature of the version's SavedModel.

        Raises:
            ServingError: INVALID_ARGUMENT ``Missing ModelSpec``, ``GetModelMetadataRequest must
                specify at least one metadata_field``, ``Metadata field x is not supported``
                (``get_model_metadata_impl.cc``); resolution errors.
        """
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {field} is not supported")
            servable = resolve_spec(self.manager, request.model_spec).servable
        except ServingError as exc:
            self._count(request, "metadata", exc)
            raise
        signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = protos.get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        self._count(request, "metadata", None)
        return response

    def get_model_status(self, request):
        """``ModelService.GetModelStatus``.

        Args:
            request: ``GetModelStatusRequest``; ``model_spec.version`` selects one version,
                ``version_label`` is resolved through the config's labels.

        Returns:
            ``GetModelStatusResponse`` with one ``ModelVersionStatus`` per version (highest
            first): state, and ``status.error_code``/``error_message`` (OK and "" unless the
            version failed to load; then UNKNOWN and the load error).

        Raises:
            ServingError: INVALID_ARGUMENT ``Missing ModelSpec``; NOT_FOUND ``Could not find any
                versions of model x`` / ``Could not find version v of model x``; label errors.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = None
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = int(spec.version.value)
        elif choice == "version_label":
            version = self.manager.handle(spec.name, label=spec.version_label).servable.version
        response = protos.get_model_status_pb2.GetModelStatusResponse()
        for number, state, error in self.manager.status(spec.name, version):
            entry = response.model_version_status.add(version=number, state=state)
            entry.status.SetInParent()  # TF Serving always sets it: OK and "" when healthy
            if error:
                entry.status.error_code = 2  # tensorflow.error.Code UNKNOWN
                entry.status.error_message = error
        return response

    def reload_config(self, request):
        """``ModelService.HandleReloadConfigRequest``: replace the served models.

        Like TF Serving, returns once the new config's versions have had their first load
        attempt. A later change of ``--model_config_file`` replaces this config again.

        Args:
            request: ``ReloadConfigRequest`` with a ``ModelServerConfig``.

        Returns:
            ``ReloadConfigResponse`` with ``status.error_code`` OK.

        Raises:
            ServingError: INVALID_ARGUMENT for a config the server cannot serve.
        """
        from tensorflow_serving.apis import model_management_pb2

        try:
            models = models_from_proto(request.config, "ReloadConfigRequest.config")
        except ConfigError as exc:
            raise invalid_argument(str(exc)) from exc
        self.manager.configure(models)
        self.manager.poll()
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        return response
