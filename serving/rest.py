"""REST endpoints, as TF Serving's HTTP server (``tensorflow_serving/model_servers/``
``http_rest_api_handler.cc``):

- ``GET /v1/models/<name>[/versions/<v> | /labels/<l>]``: model status JSON
  ``{"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code":
  "OK", "error_message": ""}}]}`` (protobuf JSON of ``GetModelStatusResponse``, field names kept).
- ``GET /v1/models/<name>[/versions/<v> | /labels/<l>]/metadata``: ``{"model_spec": ...,
  "metadata": {"signature_def": ...}}``.
- ``POST /v1/models/<name>[/versions/<v> | /labels/<l>]:predict`` with ``{"instances": [...]}``
  (row format) or ``{"inputs": ...}`` (columnar): ``{"predictions": ...}`` / ``{"outputs": ...}``.
- the Prometheus metrics path when monitoring is enabled.

Errors: ``{"error": "<TF Serving message>"}`` with the HTTP status of the gRPC code.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading

import grpc
import numpy as np
from google.protobuf import json_format
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from contract import SIGNATURE_NAME
from serving.config import MonitoringOptions
from serving.core import SIGNATURE_DEF_FIELD, ServingCore
from serving.errors import ServingError, invalid_argument
from serving.ports import bind
from serving_api import protos, tensors

log = logging.getLogger(__name__)

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict)?$"
)


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body, indent=1), status=status, mimetype="application/json")


def _spec(match: re.Match, spec) -> None:
    spec.name = match["name"]
    if match["version"] is not None:
        spec.version.value = int(match["version"])
    elif match["label"] is not None:
        spec.version_label = match["label"]


def _to_list(array: np.ndarray, alias: str):
    if array.dtype == object:  # DT_STRING: text when UTF-8, else {"b64": ...} as TF Serving

        def convert(value: bytes):
            if alias.endswith("_bytes"):
                return {"b64": base64.b64encode(value).decode("ascii")}
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode("ascii")}

        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


class RestApp:
    """The WSGI application.

    Args:
        core: the data plane.
        monitoring: Prometheus options (metrics path served when enabled).
    """

    def __init__(self, core: ServingCore, monitoring: MonitoringOptions) -> None:
        self._core = core
        self._monitoring = monitoring

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._route(request)
        except ServingError as exc:
            response = _json({"error": exc.message}, exc.http_status)
        except Exception as exc:  # answer, never drop the connection
            log.exception("REST error")
            response = _json({"error": f"{type(exc).__name__}: {exc}"}, 500)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if self._monitoring.enabled and path == self._monitoring.path:
            return Response(self._core.metrics.exposition(), mimetype="text/plain; version=0.0.4")
        match = _PATH.match(path)
        if match is None:
            return _json({"error": "Malformed request: " + request.method + " " + path}, 404)
        suffix = match["suffix"]
        if suffix == ":predict":
            if request.method != "POST":
                return _json({"error": "Malformed request: use POST for :predict"}, 405)
            return self._predict(match, request)
        if request.method != "GET":
            return _json({"error": f"Malformed request: {request.method} {path}"}, 405)
        if suffix == "/metadata":
            return self._metadata(match)
        return self._status(match)

    def _status(self, match: re.Match) -> Response:
        request = protos.get_model_status_pb2.GetModelStatusRequest()
        _spec(match, request.model_spec)
        response = self._core.get_model_status(request)
        body = json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return _json(body)

    def _metadata(self, match: re.Match) -> Response:
        request = protos.get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[SIGNATURE_DEF_FIELD]
        )
        _spec(match, request.model_spec)
        response = self._core.get_model_metadata(request)
        signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return _json(
            {
                "model_spec": json_format.MessageToDict(
                    response.model_spec, preserving_proto_field_name=True
                ),
                "metadata": {
                    SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                        signature_map, preserving_proto_field_name=True
                    )
                },
            }
        )

    def _predict(self, match: re.Match, http_request: Request) -> Response:
        try:
            body = json.loads(http_request.get_data() or b"null")
        except ValueError as exc:
            raise invalid_argument(f"JSON Parse error: {exc}") from exc
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        request = protos.predict_pb2.PredictRequest()
        _spec(match, request.model_spec)
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid_argument("'signature_name' key must be a string value.")
        request.model_spec.signature_name = signature_name
        servable = self._core.manager.handle(
            request.model_spec.name,
            version=int(match["version"]) if match["version"] else None,
            label=match["label"],
        ).servable
        signature = servable.signature_defs.get(signature_name or SIGNATURE_NAME)
        if signature is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found.',
            )
        row_format = "instances" in body
        values = body["instances"] if row_format else body["inputs"]
        if isinstance(values, dict):
            named = values
        elif len(signature.inputs) == 1:
            named = {next(iter(signature.inputs)): values}
        else:
            raise invalid_argument("named inputs are required for a signature with several inputs")
        for alias, value in named.items():
            info = signature.inputs.get(alias)
            if info is None:
                raise invalid_argument(f"input tensor alias not found in signature: {alias}")
            try:
                if info.dtype == protos.types_pb2.DT_STRING:
                    array = np.array(value, dtype=object)
                else:
                    array = np.array(value, dtype=tensors.numpy_dtype(info.dtype))
            except (ValueError, TypeError, OverflowError) as exc:
                raise invalid_argument(
                    f"input '{alias}' is not of expected type "
                    f"{tensors.dtype_name(info.dtype)}: {exc}"
                ) from exc
            request.inputs[alias].CopyFrom(tensors.to_tensor_proto(array))
        response = self._core.predict(request)
        outputs = {
            alias: _to_list(tensors.to_ndarray(proto), alias)
            for alias, proto in response.outputs.items()
        }
        if row_format:
            if len(outputs) == 1:
                return _json({"predictions": next(iter(outputs.values()))})
            rows = len(next(iter(outputs.values())))
            return _json(
                {"predictions": [{a: o[i] for a, o in outputs.items()} for i in range(rows)]}
            )
        return _json({"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))})


class RestServer:
    """A threaded werkzeug HTTP server for :class:`RestApp` on its own thread.

    Args:
        app: the WSGI app.
        port: TCP port (0 = any free port).
        host: interface to bind.

    Raises:
        PortError: the port cannot be bound (werkzeug would print and exit instead).
    """

    def __init__(self, app: RestApp, port: int, host: str = "0.0.0.0") -> None:
        sock = bind(host, port, "REST", listen=True)
        try:  # werkzeug serves a duplicate of this descriptor
            self._server = make_server(host, port, app, threaded=True, fd=sock.fileno())
        finally:
            sock.close()
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest", daemon=True)

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting; returns after the serve loop ended."""
        self._server.shutdown()
        self._thread.join(timeout=10)
