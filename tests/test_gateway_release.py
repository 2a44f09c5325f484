"""The gateway with the committed release model (models/fashion/1) on real photos.

The photos are from ../shared's test split, one per class, chosen because release version 1
classifies them correctly (with confidence 0.91 to 0.99); requests pin ``version=1`` so a later
release does not change what is checked. Through this gateway, version 1 labels 337 of the 372
test photos correctly (0.906).
"""

from __future__ import annotations

import io

import pytest
from conftest import DATA_DIR, ROOT
from support.model_config import pinned_server_args
from support.release_photos import V1_PHOTOS

from gateway.app import create_app
from gateway.settings import Settings
from serving.launcher import ModelServerProcess

MODEL_BASE = ROOT / "models" / "fashion"
DATA = DATA_DIR
PHOTOS = V1_PHOTOS
PINNED = {"version": 1}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    log = tmp_path_factory.mktemp("release") / "serving.log"
    with ModelServerProcess(
        pinned_server_args(log.parent, MODEL_BASE, [1]), log_path=log
    ) as server:
        yield create_app(Settings.from_env({}, grpc_address=server.grpc_address)).test_client()


def _photo(label: str) -> bytes:
    return (DATA / "test" / label / PHOTOS[label]).read_bytes()


@pytest.mark.parametrize("label", sorted(PHOTOS))
def test_real_photo_gets_its_true_label(client, label):
    response = client.post(
        "/predict",
        data=_photo(label),
        content_type="image/jpeg",
        query_string={**PINNED, "top_k": 10},
    )
    assert response.status_code == 200
    assert response.json["model"] == {"name": "fashion", "version": 1}
    prediction = response.json["prediction"]
    assert prediction["label"] == label
    assert prediction["confidence"] > 0.9
    probabilities = [t["probability"] for t in prediction["top_k"]]
    assert len(probabilities) == 10
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_batch_of_real_photos_keeps_order_and_filenames(client):
    labels = sorted(PHOTOS)
    files = [(io.BytesIO(_photo(label)), PHOTOS[label]) for label in labels]
    files.insert(3, (io.BytesIO(_photo("hat")[:5000]), "truncated.jpg"))
    response = client.post(
        "/predict_batch",
        data={"images": files},
        content_type="multipart/form-data",
        query_string=PINNED,
    )
    assert response.status_code == 200
    items = response.json["predictions"]
    assert [i["filename"] for i in items] == [f[1] for f in files]
    assert items[3]["error"]["code"] == "corrupt_image"
    assert [i["label"] for i in items if "error" not in i] == labels


def test_classes_and_input_come_from_the_release_version(client):
    labels = (MODEL_BASE / "1" / "assets.extra" / "labels.txt").read_text().split()
    assert labels == [
        "dress",
        "hat",
        "longsleeve",
        "outwear",
        "pants",
        "shirt",
        "shoes",
        "shorts",
        "skirt",
        "t-shirt",
    ]
    assert client.get("/classes", query_string=PINNED).json == {
        "model": {"name": "fashion", "version": 1},
        "classes": labels,
    }
    info = client.get("/").json
    assert info["model"]["input"] == {
        "name": "images",
        "dtype": "DT_UINT8",
        "shape": [-1, 224, 224, 3],
    }
    assert info["model"]["num_classes"] == 10
