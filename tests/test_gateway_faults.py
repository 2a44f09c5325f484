"""Gateway behaviour when TF Serving fails: down, too slow, flaky, erroring.

A fake gRPC server injects each fault (the real server cannot be made slow or flaky on demand);
the happy path is tested against the real local model server in test_gateway_inputs.py.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from concurrent import futures

import grpc
import numpy as np
import pytest
from PIL import Image

from gateway.app import create_app
from gateway.settings import Settings
from serving_api import protos
from serving_api.tensors import to_tensor_proto

LABELS = [b"cat", b"dog"]


def _tensor_info(dtype: int, dims: list[int]) -> object:
    info = protos.meta_graph_pb2.TensorInfo(name="x:0", dtype=dtype)
    info.tensor_shape.dim.extend(protos.tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims)
    return info


class FakeServing(
    protos.prediction_service_pb2_grpc.PredictionServiceServicer,
    protos.model_service_pb2_grpc.ModelServiceServicer,
):
    """Answers like TF Serving for a 2-class model with 8x8 uint8 input, with injected faults.

    Attributes:
        predict_delay: seconds Predict waits before answering (or until the call is cancelled).
        unavailable_first: the first N Predict calls fail with UNAVAILABLE.
        predict_error: (code, message) every later Predict call fails with.
        predict_calls: Predict calls received.
        mangle: called with each Predict response before it is sent (malformed answers).
        versions: the versions served; a call pinned to another is NOT_FOUND as TF Serving says
            it, and GetModelStatus lists these (none: the model is unknown).
    """

    def __init__(self) -> None:
        self.versions: tuple[int, ...] = (1,)
        self.predict_delay = 0.0
        self.unavailable_first = 0
        self.predict_error: tuple[grpc.StatusCode, str] | None = None
        self.predict_calls = 0
        self.mangle = None
        self._lock = threading.Lock()

    def _check_version(self, request, context) -> None:
        spec = request.model_spec
        if spec.HasField("version") and spec.version.value not in self.versions:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
            )

    def GetModelMetadata(self, request, context):  # noqa: N802
        self._check_version(request, context)
        types = protos.types_pb2
        signature = protos.meta_graph_pb2.SignatureDef()
        signature.inputs["pixels"].CopyFrom(_tensor_info(types.DT_UINT8, [-1, 8, 8, 3]))
        signature.outputs["probabilities"].CopyFrom(_tensor_info(types.DT_FLOAT, [-1, 2]))
        signature.outputs["classes"].CopyFrom(_tensor_info(types.DT_STRING, [-1, 2]))
        signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
        signature_map.signature_def["serving_default"].CopyFrom(signature)
        response = protos.get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 1
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def GetModelStatus(self, request, context):  # noqa: N802
        if not self.versions:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model {request.model_spec.name}",
            )
        response = protos.get_model_status_pb2.GetModelStatusResponse()
        for version in self.versions:
            status = response.model_version_status.add()
            status.version = version
            status.state = protos.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response

    def Predict(self, request, context):  # noqa: N802
        self._check_version(request, context)
        with self._lock:
            self.predict_calls += 1
            flaky = self.predict_calls <= self.unavailable_first
        if flaky:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if self.predict_delay:
            done = threading.Event()
            context.add_callback(done.set)  # fires when the client gives up
            done.wait(self.predict_delay)
        if self.predict_error:
            context.abort(*self.predict_error)
        n = request.inputs["pixels"].tensor_shape.dim[0].size
        response = protos.predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 1
        response.outputs["probabilities"].CopyFrom(
            to_tensor_proto(np.tile(np.float32([0.25, 0.75]), (n, 1)))
        )
        response.outputs["classes"].CopyFrom(to_tensor_proto(np.array([LABELS] * n, dtype=object)))
        if self.mangle:
            self.mangle(response)
        return response


@pytest.fixture()
def fake():
    servicer = FakeServing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    protos.model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.address = f"127.0.0.1:{port}"
    servicer.server = server
    yield servicer
    server.stop(grace=None)


def _client(address: str, **overrides):
    settings = Settings.from_env({}, grpc_address=address, retry_backoff_seconds=0.01, **overrides)
    return create_app(settings, warm_up=False).test_client()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _post(client, **query):
    return client.post("/predict", data=_png(), content_type="image/png", query_string=query)


def test_fake_happy_path_labels_come_from_the_response(fake):
    response = _post(_client(fake.address), top_k=5)
    assert response.status_code == 200
    assert response.json == {
        "model": {"name": "fashion", "version": 1},
        "prediction": {
            "label": "dog",
            "class_id": 1,
            "confidence": 0.75,
            "top_k": [
                {"label": "dog", "class_id": 1, "probability": 0.75},
                {"label": "cat", "class_id": 0, "probability": 0.25},
            ],
        },
    }


def test_too_slow_serving_is_504(fake):
    fake.predict_delay = 5.0
    response = _post(_client(fake.address, deadline_seconds=0.3))
    assert response.status_code == 504
    assert response.json["error"]["code"] == "deadline_exceeded"


def test_unavailable_is_retried_then_succeeds(fake):
    fake.unavailable_first = 2
    response = _post(_client(fake.address, retries=2))
    assert response.status_code == 200
    assert fake.predict_calls == 3


def test_unavailable_after_bounded_retries_is_503_with_retry_after(fake):
    fake.unavailable_first = 10
    response = _post(_client(fake.address, retries=1, retry_after_seconds=7))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json["error"]["code"] == "serving_unavailable"
    assert fake.predict_calls == 2


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        (grpc.StatusCode.INTERNAL, 502, "serving_error"),
        (grpc.StatusCode.INVALID_ARGUMENT, 502, "serving_error"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 502, "serving_error"),
    ],
)
def test_serving_errors_map_to_gateway_codes(fake, code, status, error):
    fake.predict_error = (code, "upstream says no")
    response = _post(_client(fake.address))
    assert response.status_code == status
    assert response.json["error"]["code"] == error
    assert fake.predict_calls == 1  # only UNAVAILABLE is retried


def _replace(key: str, array: np.ndarray):
    def mangle(response) -> None:
        response.outputs[key].CopyFrom(to_tensor_proto(array))

    return mangle


def _truncate_content(response) -> None:
    response.outputs["probabilities"].tensor_content = b"\x00" * 3  # not a whole float32


@pytest.mark.parametrize(
    "mangle",
    [
        _replace("probabilities", np.array([[b"a", b"b"]], dtype=object)),
        _replace("probabilities", np.float32([[0.2, 0.3, 0.5]])),
        _replace("probabilities", np.float32([[np.nan, 0.5]])),
        _replace("probabilities", np.float32([[1.5, -0.5]])),
        _replace("probabilities", np.float32([0.25, 0.75])),
        _replace("classes", np.float32([[1.0, 2.0]])),
        _replace("probabilities", np.zeros((1, 0), np.float32)),
        lambda response: response.outputs.pop("classes"),
        _truncate_content,
    ],
    ids=[
        "string-probabilities",
        "width-mismatch",
        "nan",
        "outside-0-1",
        "rank-1",
        "numeric-classes",
        "no-columns",
        "missing-classes",
        "truncated-tensor",
    ],
)
def test_malformed_predict_response_is_502_serving_error(fake, mangle):
    fake.mangle = mangle
    response = _post(_client(fake.address))
    assert response.status_code == 502, response.json
    assert response.json["error"]["code"] == "serving_error"


def test_unknown_version_label_is_404(fake):
    fake.predict_error = (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    )
    response = _post(_client(fake.address), version_label="canary")
    assert response.status_code == 404
    assert response.json["error"] == {
        "code": "not_found",
        "message": "Unrecognized servable version label: canary",
    }


def test_a_version_not_served_is_404_listing_the_available_versions(fake):
    fake.versions = (1, 3)
    client = _client(fake.address)
    for response in (_post(client, version=7), client.get("/classes?version=7")):
        assert response.status_code == 404
        assert response.json["error"] == {
            "code": "not_found",
            "message": "model 'fashion' has no available version 7; available versions: 1, 3",
        }
    assert fake.predict_calls == 0  # refused at GetModelMetadata, before any image is sent
    assert _post(client, version=3).status_code == 200


def test_a_version_of_an_unknown_model_keeps_the_servers_message(fake):
    fake.versions = ()
    response = _post(_client(fake.address), version=7)
    assert response.status_code == 404
    assert response.json["error"] == {
        "code": "not_found",
        "message": "model or version not found: Servable not found for request: "
        "Specific(fashion, 7)",
    }


def test_serving_stopped_is_503_everywhere_with_retry_after(fake):
    client = _client(fake.address, retries=1, retry_after_seconds=3)
    assert client.get("/health").status_code == 200
    fake.server.stop(grace=None).wait()
    for response in (_post(client), client.get("/health"), client.get("/classes")):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert response.json["error"]["code"] == "serving_unavailable"
    info = client.get("/")
    assert info.status_code == 200
    assert info.json["serving"]["available"] is False


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none (a few dozen bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_limit_cites_the_gateways_setting_and_its_size(fake):
    setting = "(the gateway's MAX_IMAGE_PIXELS setting)"
    huge = _png_header(50_000, 50_000)  # over Pillow's own ~179 MP ceiling as well
    response = _client(fake.address).post("/predict", data=huge, content_type="image/png")
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "image_too_large",
        "message": "image is 50000x50000 = 2500000000 pixels, over the limit of 40000000 pixels "
        + setting,
    }
    client = _client(fake.address, max_image_pixels=100)
    response = client.post("/predict", data=_png(), content_type="image/png")
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "image_too_large",
        "message": f"image is 16x12 = 192 pixels, over the limit of 100 pixels {setting}",
    }
    batch = client.post(
        "/predict_batch",
        data={"images": [(io.BytesIO(huge), "huge.png")]},
        content_type="multipart/form-data",
    )
    assert batch.status_code == 200
    assert batch.json["predictions"][0]["error"] == {
        "code": "image_too_large",
        "message": "image is 50000x50000 = 2500000000 pixels, over the limit of 100 pixels "
        + setting,
    }
    assert fake.predict_calls == 0


def test_a_decoder_crash_on_a_crafted_file_is_400_not_500(fake, monkeypatch):
    import preprocessing

    def crash(data, size, *, max_pixels):
        raise ZeroDivisionError("a Pillow plugin bug")

    monkeypatch.setattr(preprocessing, "decode", crash)
    response = _post(_client(fake.address))
    assert response.status_code == 400
    assert response.json["error"] == {
        "code": "corrupt_image",
        "message": "the image could not be decoded",
    }
    assert fake.predict_calls == 0
