"""End-to-end test of ``python -m training prepare|train|evaluate`` on a tiny real subset.

The fixture copies 6 real photos per class from ../shared (no split folders, so prepare's seeded
70/15/15 split runs) plus two files that do not decode, then trains 1 epoch per phase at 96 px
with the alpha 0.35 weights.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import manifest
from training.cli import main
from training.settings import REPO_ROOT, WEIGHTS_TEMPLATE, SplitConfig

SHARED = REPO_ROOT.parent / "shared"
DATA = SHARED / "data" / "clothing-dataset-small"
WEIGHTS_035 = SHARED / "weights" / WEIGHTS_TEMPLATE.format(alpha="0.35")
LABELS = [
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
PER_CLASS = 6


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unsplit")
    for label in LABELS:
        (root / label).mkdir()
        for src in sorted((DATA / "train" / label).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(src, root / label / src.name)
    (root / "hat" / "notes.jpg").write_text("not a photo\n")
    good = (root / "dress").iterdir().__next__().read_bytes()
    (root / "shoes" / "cut.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def run(image_set, tmp_path_factory) -> Path:
    artifacts = tmp_path_factory.mktemp("artifacts")
    assert main(["prepare", "--data-dir", str(image_set), "--artifacts", str(artifacts)]) == 0
    assert (
        main(
            [
                "train",
                "--artifacts",
                str(artifacts),
                "--alpha",
                "0.35",
                "--input-size",
                "96",
                "--weights",
                str(WEIGHTS_035),
                "--head-epochs",
                "1",
                "--finetune-epochs",
                "1",
                "--batch-size",
                "16",
                "--verbose",
                "0",
            ]
        )
        == 0
    )
    assert main(["evaluate", "--artifacts", str(artifacts), "--verbose", "0"]) == 0
    return artifacts


def test_prepare_writes_stratified_manifest_without_bad_files(run, image_set):
    assert (run / "labels.txt").read_text() == "".join(f"{label}\n" for label in LABELS)
    with open(run / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 * PER_CLASS
    assert set(rows[0]) == {"path", "label", "split"}
    for label in LABELS:
        splits = [r["split"] for r in rows if r["label"] == label]
        assert [splits.count(s) for s in ("train", "validation", "test")] == [4, 1, 1]
    assert all(Path(r["path"]).parent.name == r["label"] for r in rows)
    assert not any(Path(r["path"]).name in ("notes.jpg", "cut.jpg") for r in rows)
    report = json.loads((run / "prepare_report.json").read_text())
    assert report["layout"] == "random_split"
    assert report["totals"] == {"train": 40, "validation": 10, "test": 10}
    assert report["counts"]["validation"] == {label: 1 for label in LABELS}
    rejected = {Path(r["path"]).name: r["error"].split(":")[0] for r in report["rejected"]}
    assert rejected == {"notes.jpg": "not_an_image", "cut.jpg": "corrupt_image"}


def test_prepare_split_is_reproducible_and_seeded(image_set, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["prepare", "--data-dir", str(image_set), "--artifacts", str(a)]) == 0
    assert main(["prepare", "--data-dir", str(image_set), "--artifacts", str(b)]) == 0
    assert (
        main(["prepare", "--data-dir", str(image_set), "--artifacts", str(c), "--split-seed", "7"])
        == 0
    )
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()


def test_prepare_keeps_fixed_split_folders(tmp_path):
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        for label in ("hat", "skirt"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    report = manifest.prepare(tmp_path / "data", tmp_path / "out")
    assert report["layout"] == "fixed_splits"
    assert report["counts"] == {
        "train": {"hat": 3, "skirt": 3},
        "validation": {"hat": 2, "skirt": 2},
        "test": {"hat": 1, "skirt": 1},
    }
    entries = manifest.read_manifest(tmp_path / "out" / "manifest.csv")
    assert all(Path(e.path).parent.parent.name == e.split for e in entries)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(6, (4, 1, 1)), (20, (14, 3, 3)), (100, (70, 15, 15)), (3, (1, 1, 1)), (1, (1, 0, 0))],
)
def test_split_counts(n, expected):
    assert manifest.split_counts(n, SplitConfig()) == expected


def test_train_writes_model_history_and_run_record(run):
    record = json.loads((run / "training_run.json").read_text())
    assert record["alpha"] == 0.35
    assert record["input_size"] == [96, 96]
    assert record["seed"] == 42
    assert record["weights"] == str(WEIGHTS_035)
    assert record["epochs_run"] == {"head": 1, "finetune": 1}
    assert record["dataset"]["splits"]["train"] == {label: 4 for label in LABELS}
    assert record["dataset"]["splits"]["test"] == {label: 1 for label in LABELS}
    assert record["command"].startswith("python -m training train --artifacts ")
    assert record["hyperparameters"]["batch_size"] == 16
    assert record["tensorflow_version"].startswith("2.20.")
    assert record["started_at"].endswith("Z") and record["wall_time_seconds"] > 0
    history = json.loads((run / "history.json").read_text())
    assert set(history) == {"head", "finetune"}
    assert len(history["head"]["val_loss"]) == len(history["finetune"]["accuracy"]) == 1


def test_saved_model_scales_inside_and_outputs_probabilities(run):
    import keras

    net = keras.models.load_model(run / "model.keras")
    assert net.input_shape == (None, 96, 96, 3)
    scaling = net.get_layer("mobilenet_v2_scaling")
    assert scaling.scale == pytest.approx(1 / 127.5) and scaling.offset == pytest.approx(-1.0)
    images = np.stack([np.zeros((96, 96, 3)), np.full((96, 96, 3), 255.0)]).astype(np.float32)
    probabilities = net.predict(images, verbose=0)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_evaluate_writes_metrics_and_plots(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["labels"] == LABELS
    assert 0.0 <= metrics["accuracy"] <= 1.0
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == 10
    assert matrix.sum(axis=1).tolist() == [1] * 10
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 10)
    assert set(metrics["per_class"]) == set(LABELS)
    assert all(
        set(v) == {"precision", "recall", "f1", "support"} for v in metrics["per_class"].values()
    )
    assert [metrics["per_class"][label]["support"] for label in LABELS] == [1] * 10
    assert metrics["macro_avg"]["support"] == metrics["weighted_avg"]["support"] == 10
    for name in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(run / name) as image:
            assert image.format == "PNG" and image.width > 300


def test_cli_help_lists_subcommands_and_flags():
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for flag in (
        "--alpha",
        "--input-size",
        "--weights",
        "--seed",
        "--head-epochs",
        "--finetune-epochs",
        "--batch-size",
        "--artifacts",
    ):
        assert flag in out
    top = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "prepare" in top and "train" in top and "evaluate" in top


def test_train_without_manifest_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["train", "--artifacts", str(tmp_path), "--verbose", "0"])


def test_train_fits_an_abstain_rule_and_evaluate_judges_it(run):
    # No calibration split in this tiny set: the rule is fitted on validation and says so.
    document = json.loads((run / "abstain_rule.json").read_text())
    assert document["schema_version"] == 1 and document["other_class_index"] is None
    assert document["min_known_probability"] is None and document["temperature"] > 0
    assert document["fitted_on"]["split"] == "validation"
    assert document["fitted_on"]["held_out_from_training_and_selection"] is False
    assert document["fitted_on"]["scored_rows"] == 4 * 10  # 10 photos, 4 quarter turns
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["turned"]) == {"90", "180", "270", "all"}
    assert all(metrics["turned"][a]["n"] == 10 for a in ("90", "180", "270"))
    filing = metrics["filing"]
    assert filing["n"] == 10 and filing["filed"] + sum(filing["abstained"].values()) == 10
    assert set(metrics["bars"]["passed"]) >= {"accuracy", "coverage", "turned_filed_right"}
    assert set(metrics["calibration"]) == {"temperature", "before", "after"}
    record = json.loads((run / "calibration.json").read_text())
    assert record["rule"]["temperature"] == document["temperature"]
    assert record["test"]["accuracy"] == metrics["accuracy"]
    assert record["choices"]["tried"]
    for name in ("precision_coverage.png", "reliability.png"):
        with Image.open(run / name) as image:
            assert image.format == "PNG"


def test_calibrate_refits_the_rule_and_records_its_command_for_the_card(run, tmp_path):
    artifacts = tmp_path / "artifacts"
    shutil.copytree(run, artifacts)
    before = json.loads((artifacts / "training_run.json").read_text())
    assert "rule_refits" not in before
    argv = ["calibrate", "--artifacts", str(artifacts), "--target-precision", "0.9"]
    assert main(argv) == 0
    document = json.loads((artifacts / "abstain_rule.json").read_text())
    assert document["target_precision"] == 0.9
    after = json.loads((artifacts / "training_run.json").read_text())
    assert after["command"] == before["command"]
    (refit,) = after["rule_refits"]
    assert refit["command"] == "python -m training " + " ".join(argv)
    assert (refit["target_precision"], refit["max_off_category_filed"]) == (0.9, None)
    assert refit["at"].endswith("Z") and len(refit["at"]) == len("2026-12-03T13:42:45Z")
    assert main([*argv, "--max-off-category-filed", "0.1"]) == 0
    refits = json.loads((artifacts / "training_run.json").read_text())["rule_refits"]
    assert [r["max_off_category_filed"] for r in refits] == [None, 0.1]
