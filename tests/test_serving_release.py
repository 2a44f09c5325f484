"""``python -m serving`` on the committed release model ``models/fashion`` (real photos in).

The exact command operators use: ``python -m serving --port P --rest_api_port R --model_name
fashion --model_base_path models/fashion`` (run from the repository root).
"""

from __future__ import annotations

import json
import urllib.request

import grpc
import numpy as np
from conftest import DATA_DIR, ROOT
from support.model_config import pinned_server_args
from support.release_photos import V1_PHOTOS

import preprocessing
from serving.launcher import ModelServerProcess
from serving_api import protos, tensors

RELEASE = ROOT / "models" / "fashion"


def _predict_request(images: np.ndarray):
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = "fashion"
    request.inputs["images"].CopyFrom(tensors.to_tensor_proto(images))
    return request


def _release_labels() -> list[str]:
    return (RELEASE / "1" / "assets.extra" / "labels.txt").read_text().split()


def test_release_model_is_served_with_its_labels(tmp_path):
    assert (RELEASE / "1" / "saved_model.pb").exists(), (
        "the release model models/fashion/1 is not committed yet (make export)"
    )
    labels = _release_labels()
    assert len(labels) == 10
    # One real test photo per class, each one version 1 is known to get right.
    photos = [DATA_DIR / "test" / label / V1_PHOTOS[label] for label in labels]
    images = np.stack([preprocessing.decode(p.read_bytes(), (224, 224)) for p in photos])
    # Version 1 pinned (a newer release may answer differently), the rest as operators run it.
    args = pinned_server_args(tmp_path, RELEASE, [1])
    with ModelServerProcess(args, rest=True, log_path=tmp_path / "server.log") as server:
        with urllib.request.urlopen(server.rest_url + "/v1/models/fashion", timeout=10) as r:
            status = json.loads(r.read())["model_version_status"]
        channel = grpc.insecure_channel(server.grpc_address)
        stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict_request(images), timeout=60)
        channel.close()
    assert [s["state"] for s in status] == ["AVAILABLE"]
    probabilities = tensors.to_ndarray(response.outputs["probabilities"])
    classes = tensors.to_ndarray(response.outputs["classes"])
    assert probabilities.shape == (10, 10) and classes.shape == (10, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), np.ones(10), atol=1e-5)
    assert [[c.decode() for c in row] for row in classes] == [labels] * 10
    assert [labels[i] for i in probabilities.argmax(axis=1)] == labels  # all 10, in order
    assert probabilities.max(axis=1).min() > 0.9
