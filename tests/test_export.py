"""Export: a tiny Keras model published as a TF Serving version, read back and checked exactly.

The tiny model (32x32 input, 3 classes, fixed weights) is exported once per module through the
real CLI while a thread lists the base path; the other tests read that version, copy it, or try
refused layouts. Real test-split photos from ../shared feed the warm-up and comparisons.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import DATA_DIR, ROOT
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

import preprocessing  # noqa: E402
from export import layout, model_card  # noqa: E402
from export.__main__ import main  # noqa: E402
from export.verify import ASSETS_EXTRA  # noqa: E402

REPO = ROOT
LABELS = ["boot", "cap", "scarf"]
SIZE = 32
COMPLETE_FILES = (
    "saved_model.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
    "assets.extra/labels.txt",
    "assets.extra/model_card.json",
    "assets.extra/tf_serving_warmup_requests",
)


def _tiny_model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _complete(folder: Path) -> bool:
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size > 0 for name in COMPLETE_FILES
    )


def _export_argv(source: dict, base: Path, *extra: str) -> list[str]:
    """CLI arguments exporting the tiny model; no training artifacts (the card's figures null)."""
    return [
        "--model",
        str(source["path"]),
        "--base-path",
        str(base),
        "--labels",
        str(source["labels"]),
        "--artifacts",
        str(base.parent / "no-artifacts"),
        *extra,
    ]


def _real_images(count: int) -> np.ndarray:
    files = sorted((DATA_DIR / "test" / "hat").glob("*.jpg"))[:count]
    assert len(files) == count, f"need {count} real images under {DATA_DIR}"
    return np.stack([preprocessing.decode(p.read_bytes(), (SIZE, SIZE)) for p in files])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tiny model saved as .keras plus its labels file."""
    folder = tmp_path_factory.mktemp("source")
    model = _tiny_model()
    model.save(folder / "model.keras")
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return {"model": model, "path": folder / "model.keras", "labels": folder / "labels.txt"}


@pytest.fixture(scope="module")
def published(source, tmp_path_factory):
    """Export version 1 via the CLI, with a stale staging folder present and a watcher thread."""
    base = tmp_path_factory.mktemp("models") / "fashion"
    stale = base / f".staging-5-{_dead_pid()}"
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half-written")

    seen: dict[str, bool] = {}
    staging_seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while True:
            finished = stop.is_set()  # one more listing after the export returned
            for name in os.listdir(base):
                if name.isdigit() and name not in seen:
                    seen[name] = _complete(base / name)
                elif name.startswith(".staging-1-"):
                    staging_seen.add(name)
            if finished:
                return
            stop.wait(0.002)

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("export.publish").addHandler(handler)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FASHION_DATA_DIR", str(DATA_DIR))
            rc = main(_export_argv(source, base))
    finally:
        stop.set()
        watcher.join()
        logging.getLogger("export.publish").removeHandler(handler)
    return {
        "rc": rc,
        "base": base,
        "version": base / "1",
        "stale": stale,
        "seen": seen,
        "staging_seen": staging_seen,
        "messages": [r.getMessage() for r in records],
    }


def test_export_publishes_only_complete_versions_and_removes_stale_staging(published):
    assert published["rc"] == 0
    assert sorted(os.listdir(published["base"])) == ["1"]
    assert published["seen"] == {"1": True}  # the first sighting of "1" was already complete
    assert len(published["staging_seen"]) == 1  # the watcher did see the staging folder
    assert not published["stale"].exists()
    assert any(str(published["stale"]) in m and "stale" in m for m in published["messages"])
    assert _complete(published["version"])


def test_savedmodel_outputs_equal_the_keras_model(published, source):
    loaded = tf.saved_model.load(str(published["version"]))
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert (spec.dtype, spec.shape.as_list()) == (tf.uint8, [None, SIZE, SIZE, 3])
    images = _real_images(5)
    outputs = serve(images=tf.constant(images))
    expected = source["model"](images.astype(np.float32), training=False).numpy()
    assert outputs["probabilities"].shape == (5, 3)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=0, atol=1e-6)
    assert outputs["classes"].numpy().tolist() == [[b"boot", b"cap", b"scarf"]] * 5


def test_labels_and_model_card_without_training_artifacts(published):
    extra = published["version"] / ASSETS_EXTRA
    assert (extra / "labels.txt").read_text() == "boot\ncap\nscarf\n"
    card = json.loads((extra / "model_card.json").read_text())
    assert (card["name"], card["version"], card["labels"], card["num_classes"]) == (
        "fashion",
        1,
        LABELS,
        3,
    )
    assert card["signature"]["inputs"]["images"]["shape"] == [-1, SIZE, SIZE, 3]
    assert card["preprocessing"] == preprocessing.SPEC
    assert (card["dataset"], card["metrics"], card["training"]) == (None, None, None)
    assert card["missing"] == ["training_run.json", "metrics.json"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", card["export"]["git_commit"])
    assert card["export"]["tensorflow_version"] == tf.__version__
    assert card["export"]["warmup"]["images"] == f"{DATA_DIR} (test split)"
    assert len(card["export"]["warmup"]["files"]) == 32


def test_warmup_file_holds_predict_requests_of_real_images(published):
    extra = published["version"] / ASSETS_EXTRA
    logs = []
    for raw in tf.data.TFRecordDataset(str(extra / "tf_serving_warmup_requests")):
        logs.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    assert len(logs) == 2
    files = json.loads((extra / "model_card.json").read_text())["export"]["warmup"]["files"]
    real = np.stack(
        [preprocessing.decode((DATA_DIR / f).read_bytes(), (SIZE, SIZE)) for f in files]
    )
    for log, batch in zip(logs, (1, 32), strict=True):
        request = log.predict_log.request
        assert (request.model_spec.name, request.model_spec.signature_name) == (
            "fashion",
            "serving_default",
        )
        assert list(request.inputs) == ["images"]
        tensor = request.inputs["images"]
        assert tensor.dtype == tf.uint8.as_datatype_enum
        assert [d.size for d in tensor.tensor_shape.dim] == [batch, SIZE, SIZE, 3]
        np.testing.assert_array_equal(tf.make_ndarray(tensor), real[:batch])
    # the 32 images cover every class folder of the test split, round robin
    assert len({Path(f).parts[1] for f in files}) == 10


def test_existing_version_is_refused(published, source, capsys):
    before = (published["version"] / "saved_model.pb").stat().st_mtime_ns
    rc = main(_export_argv(source, published["base"], "--version", "1"))
    assert rc == 1
    assert "version 1 already exists" in capsys.readouterr().err
    assert sorted(os.listdir(published["base"])) == ["1"]
    assert (published["version"] / "saved_model.pb").stat().st_mtime_ns == before


def test_zero_padded_collision_is_refused(source, tmp_path, capsys):
    base = tmp_path / "fashion"
    (base / "007").mkdir(parents=True)
    (base / "7").mkdir()
    rc = main(_export_argv(source, base))
    assert rc == 1
    err = capsys.readouterr().err
    assert "'007', '7'" in err and "version 7" in err
    assert sorted(os.listdir(base)) == ["007", "7"]
    assert main(["list", str(base)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "007      -         -                     no saved_model.pb; no readable model card; "
        "non-canonical name, TF Serving reads it as version 7; collides with ['7']",
        "7        -         -                     no saved_model.pb; no readable model card; "
        "collides with ['007']",
    ]


def test_savedmodel_directly_in_base_path_is_refused(source, tmp_path, capsys):
    base = tmp_path / "fashion"
    base.mkdir()
    (base / "saved_model.pb").write_bytes(b"")
    rc = main(_export_argv(source, base))
    assert rc == 1
    assert "saved_model.pb sits directly in the base path" in capsys.readouterr().err
    assert os.listdir(base) == ["saved_model.pb"]


def test_labels_that_do_not_fit_the_model_are_refused(source, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("boot\ncap\n")
    base = tmp_path / "fashion"
    argv = _export_argv(source, base)
    argv[argv.index("--labels") + 1] = str(labels)
    assert main(argv) == 1
    assert "has 2 labels but the model outputs 3 classes" in capsys.readouterr().err
    assert os.listdir(base) == []


def test_next_version_is_highest_plus_one(tmp_path):
    for name in ("1", "3", "010", "notes", ".staging-40-1"):
        (tmp_path / name).mkdir()
    scanned = layout.scan(tmp_path)
    assert scanned.versions == {1: ["1"], 3: ["3"], 10: ["010"]}
    assert scanned.next_version() == 11
    assert [s.version for s in scanned.staging] == [40]
    assert layout.scan(tmp_path / "missing").next_version() == 1


def test_failed_verification_publishes_nothing(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("export.verify.REFERENCE_TOLERANCE", -1.0)  # any difference fails
    base = tmp_path / "fashion"
    rc = main(_export_argv(source, base))
    assert rc == 1
    assert "verification failed: matches Keras" in capsys.readouterr().err
    assert os.listdir(base) == []


def test_a_staged_card_naming_another_version_publishes_nothing(
    source, tmp_path, monkeypatch, capsys
):
    build = model_card.build

    def off_by_one(**kwargs):
        return {**build(**kwargs), "version": kwargs["version"] + 1}

    monkeypatch.setattr("export.model_card.build", off_by_one)
    base = tmp_path / "fashion"
    assert main(_export_argv(source, base)) == 1
    err = capsys.readouterr().err
    assert (
        "verification failed: model card: card says version 2, the folder is to be version 1" in err
    )
    assert os.listdir(base) == []


def test_interrupted_export_leaves_no_folder(source, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("export.warmup.write", interrupt)
    base = tmp_path / "fashion"
    with pytest.raises(KeyboardInterrupt):
        main(_export_argv(source, base))
    assert os.listdir(base) == []


def test_verify_passes_the_export_and_fails_a_copy_without_variables(published, tmp_path, capsys):
    assert main(["verify", str(published["version"])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{published['version']}: verified"
    copy = tmp_path / "fashion" / "1"
    shutil.copytree(published["version"], copy)
    shutil.rmtree(copy / "variables")
    assert main(["verify", str(copy)]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = {line.split()[1] for line in lines if line.startswith("FAIL")}
    assert failed == {"files", "load", "outputs"}
    assert "variables/variables.index" in next(x for x in lines if x.startswith("FAIL files"))
    assert lines[-1] == f"{copy}: FAILED"


def test_list_shows_versions_with_accuracy_and_creation_time(published, capsys):
    card = model_card.read(published["version"] / ASSETS_EXTRA / "model_card.json")
    assert main(["list", str(published["base"])]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "VERSION  ACCURACY  CREATED_AT            NOTE",
        f"1        -         {card['created_at']}",
    ]
    assert main(["list", str(published["base"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "version": 1,
            "folder": "1",
            "accuracy": None,
            "created_at": card["created_at"],
            "note": "",
        }
    ]


def test_model_card_takes_figures_from_training_artifacts(tmp_path):
    run = {
        "command": "python -m training train",
        "seed": 42,
        "alpha": 0.5,
        "input_size": [224, 224],
        "weights": "w.h5",
        "tensorflow_version": "2.20.0",
        "keras_version": "3",
        "started_at": "2026-11-29T10:00:00Z",
        "wall_time_seconds": 61.5,
        "dataset": {
            "path": "/data",
            "splits": {
                "train": {"boot": 4, "cap": 2, "scarf": 1},
                "test": {"boot": 1, "cap": 1, "scarf": 1},
            },
        },
        "hyperparameters": {"batch_size": 32},
        "epochs_run": {"head": 3, "finetune": 2},
        "rule_refits": [{"command": "python -m training calibrate --target-precision 0.96"}],
    }
    metrics = {
        "split": "test",
        "accuracy": 0.9,
        "labels": LABELS,
        "per_class": {
            k: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for k in LABELS
        },
        "macro_avg": {"f1": 1.0},
        "weighted_avg": {"f1": 1.0},
        "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    }
    (tmp_path / "training_run.json").write_text(json.dumps(run))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    artifacts = model_card.read_artifacts(tmp_path)
    card = model_card.build(
        name="fashion",
        version=4,
        labels=LABELS,
        input_size=(224, 224),
        artifacts=artifacts,
        export_info={},
    )
    assert card["dataset"]["split_counts"] == {"train": 7, "test": 3}
    assert card["metrics"]["accuracy"] == 0.9
    assert card["metrics"]["per_class"]["cap"]["support"] == 1
    assert card["architecture"]["alpha"] == 0.5
    assert (
        card["training"]["seed"],
        card["training"]["wall_time_seconds"],
        card["training"]["command"],
    ) == (42, 61.5, "python -m training train")
    assert card["training"]["rule_refits"] == run["rule_refits"]
    assert card["missing"] == []
    with pytest.raises(ValueError, match="differ"):
        model_card.build(
            name="fashion",
            version=4,
            labels=["x", "y", "z"],
            input_size=(224, 224),
            artifacts=artifacts,
            export_info={},
        )


def test_committed_release_version_verifies(capsys):
    release = REPO / "models" / "fashion" / "1"
    assert main(["verify", str(release)]) == 0, capsys.readouterr().out
    card = model_card.read(release / ASSETS_EXTRA / "model_card.json")
    assert card["labels"] == sorted(p.name for p in (DATA_DIR / "test").iterdir() if p.is_dir())
    assert card["num_classes"] == 10
    assert 0.0 <= card["metrics"]["accuracy"] <= 1.0
    assert set(card["dataset"]["split_counts"]) == {"train", "validation", "test"}
    assert card["dataset"]["split_counts"]["test"] == len(list(DATA_DIR.glob("test/*/*.jpg")))


def test_verify_checks_a_folder_staged_by_hand_against_the_version_it_will_become(
    published, tmp_path, capsys
):
    card = json.loads((published["version"] / "assets.extra" / "model_card.json").read_text())
    staged = tmp_path / "fashion" / f".incoming-{card['version']}"
    shutil.copytree(published["version"], staged)
    # by its name alone it cannot pass, and the message says what to do
    assert main(["verify", str(staged)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"FAIL folder name    '{staged.name}' is not a canonical positive version number "
        "(e.g. '1'); a folder staged under another name is checked with --as-version N"
    )
    assert main(["verify", "--as-version", str(card["version"]), str(staged)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ok   folder name    staged, to be renamed to {card['version']}"
    assert lines[-1] == f"{staged}: verified"
    other = card["version"] + 6
    assert main(["verify", "--as-version", str(other), str(staged)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [x for x in lines if x.startswith("FAIL")] == [
        f"FAIL model card     card says version {card['version']}, the folder is to be "
        f"version {other} ('{staged.name}')"
    ]
