"""Export with an abstain rule: the calibrated outputs in the signature, exactly as the rule says.

A tiny Keras model with an off-category column (tests/support/abstain_models.py) is exported
through the real CLI with ``abstain_rule.json`` beside it, as training leaves it. Solid-colour
photos have known softmax outputs, so every served decision is known before the test runs. Then
the committed version 1 and the tiny rule version are served together by the real local model
server: version 1 answers exactly as before, version 2 has the new outputs on the wire.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import DATA_DIR, ROOT
from support import abstain_models as am  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

import preprocessing  # noqa: E402
from export import model_card  # noqa: E402
from export.__main__ import main  # noqa: E402
from serving.launcher import ModelServerProcess  # noqa: E402
from serving_api import protos, tensors  # noqa: E402

REPO = ROOT
RELEASE_V1 = REPO / "models" / "fashion" / "1"
CALIBRATION_RECORD = {
    "ece": {"before": 0.081, "after": 0.024},
    "reliability": {"before": [[0.9, 0.8, 12]], "after": [[0.9, 0.89, 12]]},
    "tried": ["temperature only", "temperature + 11th class"],
}


def _export(source: dict, base: Path, *extra: str) -> int:
    return main(
        [
            "--model",
            str(source["model"]),
            "--labels",
            str(source["labels"]),
            "--artifacts",
            str(base.parent / "no-artifacts"),
            "--base-path",
            str(base),
            "--data-dir",
            str(DATA_DIR),
            *extra,
        ]
    )


def _signature_outputs(folder: Path) -> dict[str, tuple[str, list[int]]]:
    saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    sig = saved.meta_graphs[0].signature_def["serving_default"]
    return {
        name: (tf.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
        for name, info in sig.outputs.items()
    }


def _serve(folder: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(folder))
    outputs = loaded.signatures["serving_default"](images=tf.constant(batch))
    return {name: tensor.numpy() for name, tensor in outputs.items()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """model.keras + labels.txt + abstain_rule.json + calibration.json, side by side."""
    folder = tmp_path_factory.mktemp("trained")
    paths = am.write_source(folder)
    (folder / "calibration.json").write_text(json.dumps(CALIBRATION_RECORD))
    return paths


@pytest.fixture(scope="module")
def version(source, tmp_path_factory):
    """The tiny rule model published as version 2 (the rule found beside the model)."""
    base = tmp_path_factory.mktemp("models") / "fashion"
    assert _export(source, base, "--version", "2") == 0
    return base / "2"


def test_rule_outputs_exist_with_exact_dtypes_and_shapes(version):
    assert _signature_outputs(version) == {
        "probabilities": ("float32", [-1, 3]),
        "classes": ("string", [-1, 3]),
        "known_probability": ("float32", [-1]),
        "abstain": ("bool", [-1]),
        "abstain_reason": ("string", [-1]),
    }


def test_served_decisions_are_the_rule_applied_to_known_scores(version):
    colours = list(am.COLOURS)
    out = _serve(version, am.images(colours))
    reference = am.expected(am.images(colours))
    reasons = [r.decode() for r in out["abstain_reason"]]
    assert reasons == [am.EXPECTED[c][1] for c in colours]
    assert out["abstain"].tolist() == [am.EXPECTED[c][1] != "" for c in colours]
    assert out["abstain"].dtype == np.bool_ and out["known_probability"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], reference.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        out["known_probability"], reference.known_probability, rtol=0, atol=1e-6
    )
    # closed forms (rule: T = 2, so the logits are halved): red [3,0,0,0], blue [0,0,0,3]
    e3 = np.exp(3.0)
    assert out["probabilities"][0].tolist() == pytest.approx(
        [e3 / (e3 + 2), 1 / (e3 + 2)] + [1 / (e3 + 2)], abs=1e-6
    )
    assert out["known_probability"][2] == pytest.approx(3 / (3 + e3), abs=1e-6)
    filed = [am.LABELS[i] for i in out["probabilities"].argmax(axis=1)]
    assert [filed[i] for i, c in enumerate(colours) if am.EXPECTED[c][0]] == ["boot", "scarf"]
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert out["classes"].tolist() == [[label.encode() for label in am.LABELS]] * len(colours)


def test_rule_travels_in_assets_extra_and_in_the_model_card(version, source):
    extra = version / "assets.extra"
    assert (extra / "abstain_rule.json").read_bytes() == source["rule"].read_bytes()
    card = model_card.read(extra / "model_card.json")
    assert card["abstain_rule"] == am.RULE
    assert card["calibration"] == {"file": "calibration.json", **CALIBRATION_RECORD}
    outputs = card["signature"]["outputs"]
    assert {name: (o["dtype"], o["shape"]) for name, o in outputs.items()} == {
        "probabilities": ("float32", [-1, 3]),
        "classes": ("string", [-1, 3]),
        "known_probability": ("float32", [-1]),
        "abstain": ("bool", [-1]),
        "abstain_reason": ("string", [-1]),
    }
    assert (extra / "labels.txt").read_text() == "boot\ncap\nscarf\n"


def test_verify_compares_the_version_with_the_numpy_rule(version, source, capsys):
    assert main(["verify", str(version), "--model", str(source["model"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    checks = [line.split()[1] for line in lines[:-1]]
    assert checks == [
        "folder",
        "files",
        "signature",
        "labels",
        "model",
        "abstain",
        "load",
        "warm-up",
        "outputs",
        "matches",
    ]
    assert all(line.startswith("ok") for line in lines[:-1]), lines
    assert "0 decision(s) differ" in lines[-2]


def test_verify_fails_a_version_whose_rule_was_edited_or_lost(version, source, tmp_path, capsys):
    edited = tmp_path / "edited" / "2"
    shutil.copytree(version, edited)
    rule = json.loads((edited / "assets.extra" / "abstain_rule.json").read_text())
    rule["min_confidence"] = 0.0  # the graph still abstains below 0.6: decisions now differ
    (edited / "assets.extra" / "abstain_rule.json").write_text(json.dumps(rule))
    assert main(["verify", str(edited), "--model", str(source["model"])]) == 1
    failed = {
        line.split()[1]: line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("FAIL ")
    }
    assert set(failed) == {"abstain", "matches"}
    assert "model card's abstain_rule differs" in failed["abstain"]
    assert "0 decision(s) differ" not in failed["matches"]

    lost = tmp_path / "lost" / "2"
    shutil.copytree(version, lost)
    (lost / "assets.extra" / "abstain_rule.json").unlink()
    assert main(["verify", str(lost)]) == 1
    out = capsys.readouterr().out
    assert "FAIL abstain rule   the signature has the rule's outputs but no" in out


def test_rule_without_an_off_category_column_knows_everything(tmp_path):
    source = am.write_source(tmp_path / "trained", with_other=False)
    base = tmp_path / "fashion"
    assert _export(source, base) == 0
    out = _serve(base / "1", am.images(["red", "blue"]))
    assert out["known_probability"].tolist() == [1.0, 1.0]
    assert [r.decode() for r in out["abstain_reason"]] == ["", "low_confidence"]
    reference = am.expected(am.images(["red", "blue"]), with_other=False)
    np.testing.assert_allclose(out["probabilities"], reference.probabilities, atol=1e-6)


def test_no_abstain_rule_exports_the_version_1_layout(tmp_path):
    source = am.write_source(tmp_path / "trained", with_other=False)
    base = tmp_path / "fashion"
    assert _export(source, base, "--no-abstain-rule") == 0
    assert _signature_outputs(base / "1") == {
        "probabilities": ("float32", [-1, 3]),
        "classes": ("string", [-1, 3]),
    }
    assert sorted(os.listdir(base / "1" / "assets.extra")) == [
        "labels.txt",
        "model_card.json",
        "tf_serving_warmup_requests",
    ]
    card = model_card.read(base / "1" / "assets.extra" / "model_card.json")
    assert "abstain_rule" not in card and "calibration" not in card
    out = _serve(base / "1", am.images(["red"]))
    np.testing.assert_allclose(
        out["probabilities"], am.raw_softmax(am.images(["red"]), False), atol=1e-6
    )


def test_rules_that_do_not_fit_the_model_are_refused(source, tmp_path, capsys):
    base = tmp_path / "fashion"
    no_other = tmp_path / "no_other.json"
    no_other.write_text(json.dumps(am.RULE_WITHOUT_OTHER))
    assert _export(source, base, "--abstain-rule", str(no_other)) == 1
    assert "the model should output 3 columns, but it outputs 4" in capsys.readouterr().err
    cold = tmp_path / "cold.json"
    cold.write_text(json.dumps({**am.RULE, "temperature": 0}))
    assert _export(source, base, "--abstain-rule", str(cold)) == 1
    assert "temperature must be a finite number > 0, got 0" in capsys.readouterr().err
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({**am.RULE, "other_class_index": 7}))
    assert _export(source, base, "--abstain-rule", str(outside)) == 1
    assert "other_class_index 7 is not one of the model's 4 columns" in capsys.readouterr().err
    assert os.listdir(base) == []


def _predict(stub, version: int, batch: np.ndarray):
    request = protos.predict_pb2.PredictRequest()
    request.model_spec.name = "fashion"
    request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tensors.to_tensor_proto(batch))
    return stub.Predict(request, timeout=60)


@pytest.mark.e2e
def test_local_server_serves_version_1_unchanged_next_to_a_rule_version(version, tmp_path):
    base = tmp_path / "fashion"
    shutil.copytree(RELEASE_V1, base / "1")
    shutil.copytree(version, base / "2")
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "fashion" base_path: "{base}" '
        'model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 1 versions: 2 } } } }"
    )
    labels = (RELEASE_V1 / "assets.extra" / "labels.txt").read_text().split()
    photos = [sorted((DATA_DIR / "test" / label).glob("*.jpg"))[0] for label in labels[:4]]
    real = np.stack([preprocessing.decode(p.read_bytes(), (224, 224)) for p in photos])
    before = _serve(RELEASE_V1, real)  # the committed SavedModel, in process
    with ModelServerProcess(
        ["--model_config_file", str(config)], wait_for_model="fashion", log_path=tmp_path / "s.log"
    ) as server:
        channel = grpc.insecure_channel(server.grpc_address)
        stub = protos.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        v1 = _predict(stub, 1, real)
        v2 = _predict(stub, 2, am.images())
        metadata = protos.get_model_metadata_pb2.GetModelMetadataRequest()
        metadata.model_spec.name = "fashion"
        metadata.model_spec.version.value = 1
        metadata.metadata_field.append("signature_def")
        v1_meta = stub.GetModelMetadata(metadata, timeout=30)
        channel.close()
    assert set(v1.outputs) == {"probabilities", "classes"}
    assert v1.model_spec.version.value == 1
    np.testing.assert_allclose(
        tensors.to_ndarray(v1.outputs["probabilities"]), before["probabilities"], atol=1e-6
    )
    assert tensors.to_ndarray(v1.outputs["classes"]).tolist() == before["classes"].tolist()
    signature_map = protos.get_model_metadata_pb2.SignatureDefMap()
    v1_meta.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def["serving_default"].outputs) == {
        "probabilities",
        "classes",
    }

    wire = {
        name: (tensors.dtype_name(t.dtype), tensors.shape_of(t)) for name, t in v2.outputs.items()
    }
    assert wire == {
        "probabilities": ("DT_FLOAT", (5, 3)),
        "classes": ("DT_STRING", (5, 3)),
        "known_probability": ("DT_FLOAT", (5,)),
        "abstain": ("DT_BOOL", (5,)),
        "abstain_reason": ("DT_STRING", (5,)),
    }
    reasons = [r.decode() for r in tensors.to_ndarray(v2.outputs["abstain_reason"])]
    assert reasons == [am.EXPECTED[c][1] for c in am.COLOURS]
    assert tensors.to_ndarray(v2.outputs["abstain"]).tolist() == [r != "" for r in reasons]
