"""The gateway passes each version's abstain decision on, read by name from its signature.

The real local model server serves a tiny version 1 without a rule (tests/support/tiny_models.py)
and version 2, the tiny off-category model exported with its rule through ``python -m export``
(tests/support/abstain_models.py). Solid-colour PNGs have known outputs, so every ``abstain``,
``abstain_reason`` and ``known_probability`` is asserted exactly. A second server starts with
version 1 only and gets version 2 while the gateway runs: the first answer of the new version
already carries the decision.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from support import abstain_models as am
from support import tiny_models

from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.model_info import parse_signature
from gateway.predictor import classify_rows
from gateway.settings import Settings
from serving.launcher import ModelServerProcess
from serving_api import protos

CONFIG = """
model_config_list {
  config {
    name: "fashion"
    base_path: "%s"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
  }
}
"""


def _expected_json(colour: str) -> dict:
    out = am.expected(am.images([colour]))
    reason = str(out.abstain_reason[0])
    return {
        "abstain": reason != "",
        "abstain_reason": reason or None,
        "known_probability": pytest.approx(float(out.known_probability[0]), abs=1e-6),
        "label": am.LABELS[int(out.probabilities[0].argmax())],
        "confidence": pytest.approx(float(out.probabilities[0].max()), abs=1e-6),
    }


def _pick(prediction: dict) -> dict:
    keys = ("abstain", "abstain_reason", "known_probability", "label", "confidence")
    return {key: prediction[key] for key in keys if key in prediction}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """``fashion/1`` tiny without a rule, ``fashion/2`` the tiny model exported with its rule."""
    folder = tmp_path_factory.mktemp("abstain-gateway")
    models = folder / "fashion"
    tiny_models.export_in_subprocess(models, [1])
    am.export_in_subprocess(models, 2, folder / "trained")
    return models


@pytest.fixture(scope="module")
def client(base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("abstain-serving")
    (folder / "models.config").write_text(CONFIG % base)
    with ModelServerProcess(
        ["--model_config_file", str(folder / "models.config")],
        wait_for_model="fashion",
        log_path=folder / "serving.log",
    ) as server:
        settings = Settings.from_env({}, grpc_address=server.grpc_address)
        yield create_app(settings).test_client()


def _batch(client, colours: list[str], **query):
    files = [(io.BytesIO(am.png(c)), f"{c}.png") for c in colours]
    return client.post(
        "/predict_batch",
        data={"images": files},
        content_type="multipart/form-data",
        query_string=query,
    )


def test_every_prediction_of_a_rule_version_carries_its_decision(client):
    colours = list(am.COLOURS)
    response = _batch(client, colours)
    assert response.status_code == 200, response.json
    assert response.json["model"] == {"name": "fashion", "version": 2}
    got = [_pick(p) for p in response.json["predictions"]]
    assert got == [_expected_json(c) for c in colours]
    # the known answers, spelled out (tests/support/abstain_models.py)
    assert [(p["abstain"], p["abstain_reason"]) for p in got] == [
        (False, None),
        (False, None),
        (True, "not_a_known_category"),
        (True, "low_confidence"),
        (True, "low_confidence"),
    ]
    assert [p["label"] for p in got[:2]] == ["boot", "scarf"]
    assert got[2]["known_probability"] == pytest.approx(3 / (3 + np.exp(3)), abs=1e-6)


def test_single_predict_carries_the_decision_raw_and_multipart(client):
    for response in (
        client.post("/predict", data=am.png("blue"), content_type="image/png"),
        client.post(
            "/predict",
            data={"image": (io.BytesIO(am.png("blue")), "blue.png")},
            content_type="multipart/form-data",
        ),
    ):
        assert response.status_code == 200, response.json
        prediction = response.json["prediction"]
        assert _pick(prediction) == _expected_json("blue")
        assert prediction["abstain_reason"] == "not_a_known_category"
        assert isinstance(prediction["abstain"], bool)


def test_a_version_without_the_outputs_has_no_decision_keys(client):
    response = _batch(client, ["red", "blue"], version=1)
    assert response.status_code == 200
    assert response.json["model"]["version"] == 1
    for item in response.json["predictions"]:
        assert set(item) == {"index", "filename", "label", "class_id", "confidence", "top_k"}
    single = client.post(
        "/predict", data=am.png("red"), content_type="image/png", query_string={"version": 1}
    )
    assert set(single.json["prediction"]) == {"label", "class_id", "confidence", "top_k"}


def test_failed_items_keep_their_error_next_to_decisions(client):
    files = [(io.BytesIO(am.png("red")), "red.png"), (io.BytesIO(b""), "empty.png")]
    response = client.post(
        "/predict_batch", data={"images": files}, content_type="multipart/form-data"
    )
    first, second = response.json["predictions"]
    assert (first["abstain"], first["abstain_reason"]) == (False, None)
    assert set(second) == {"index", "filename", "error"}


def test_openapi_names_and_types_the_decision(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    for name in ("Prediction", "BatchItem"):
        properties = schemas[name]["properties"]
        assert properties["abstain"]["type"] == "boolean"
        assert properties["abstain_reason"]["type"] == ["string", "null"]
        assert properties["abstain_reason"]["enum"] == [
            "not_a_known_category",
            "low_confidence",
            None,
        ]
        assert properties["known_probability"]["type"] == "number"
        assert "abstain" not in schemas[name]["required"]


def test_a_new_rule_version_is_read_before_its_first_answer(tmp_path):
    models = tmp_path / "fashion"
    tiny_models.export_in_subprocess(models, [1])
    with ModelServerProcess(
        [
            "--model_name=fashion",
            f"--model_base_path={models}",
            "--file_system_poll_wait_seconds=1",
        ],
        log_path=tmp_path / "serving.log",
    ) as server:
        app = create_app(Settings.from_env({}, grpc_address=server.grpc_address))
        client = app.test_client()
        before = client.post("/predict", data=am.png("blue"), content_type="image/png")
        assert before.json["model"]["version"] == 1
        assert "abstain" not in before.json["prediction"]
        am.export_in_subprocess(models, 2, tmp_path / "trained")
        deadline = time.monotonic() + 60
        while client.get("/health").json.get("available_versions") != [2]:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
        after = client.post("/predict", data=am.png("blue"), content_type="image/png")
    assert after.json["model"]["version"] == 2
    assert _pick(after.json["prediction"]) == _expected_json("blue")


@pytest.mark.unit
def test_classify_rows_adds_the_decision_only_with_rule_outputs():
    probabilities = np.array([[0.7, 0.3], [0.45, 0.55]], np.float32)
    classes = np.array([[b"hat", b"dress"]] * 2, dtype=object)
    rule = {
        "abstain": np.array([False, True]),
        "abstain_reason": np.array([b"", b"low_confidence"], dtype=object),
        "known_probability": np.array([0.9, 0.25], np.float32),
    }
    filed, unsure = (row.as_json() for row in classify_rows(probabilities, classes, 1, rule))
    assert (filed["abstain"], filed["abstain_reason"]) == (False, None)
    assert filed["known_probability"] == pytest.approx(0.9)
    assert (unsure["label"], unsure["abstain"], unsure["abstain_reason"]) == (
        "dress",
        True,
        "low_confidence",
    )
    plain = classify_rows(probabilities, classes, 1)[0].as_json()
    assert set(plain) == {"label", "class_id", "confidence", "top_k"}
    short = {**rule, "abstain": np.array([False])}
    with pytest.raises(GatewayError, match="outputs disagree"):
        classify_rows(probabilities, classes, 1, short)


def _signature(outputs: dict[str, int]) -> object:
    signature = protos.meta_graph_pb2.SignatureDef()
    images = signature.inputs["images"]
    images.dtype = protos.types_pb2.DT_UINT8
    for size in (-1, 8, 8, 3):
        images.tensor_shape.dim.add(size=size)
    for name, dtype in outputs.items():
        signature.outputs[name].dtype = dtype
    return signature


@pytest.mark.unit
def test_signature_with_some_rule_outputs_is_refused_and_all_or_none_accepted():
    t = protos.types_pb2
    plain = {"probabilities": t.DT_FLOAT, "classes": t.DT_STRING}
    rule = {"known_probability": t.DT_FLOAT, "abstain": t.DT_BOOL, "abstain_reason": t.DT_STRING}
    assert parse_signature(1, _signature(plain)).outputs == ("probabilities", "classes")
    assert parse_signature(2, _signature({**plain, **rule})).outputs == (
        "probabilities",
        "classes",
        "known_probability",
        "abstain",
        "abstain_reason",
    )
    with pytest.raises(GatewayError, match=r"abstain outputs \['abstain'\] but not"):
        parse_signature(3, _signature({**plain, "abstain": t.DT_BOOL}))
