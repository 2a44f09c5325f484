"""``prepare --extra-labels`` on a prepared manifest with every kind of split and every reason to
drop a row (training/extra_labels.py). Images are small generated JPEGs, decoded for real."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from training import extra_labels
from training.manifest import read_manifest

pytestmark = pytest.mark.unit


def jpeg(path: Path, color: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return str(path)


def test_apply_adds_to_train_only_and_drops_what_must_not_be_trained_on(tmp_path):
    data, art = tmp_path / "data", tmp_path / "artifacts"
    art.mkdir()
    rows = [
        (jpeg(data / "train/hat/t1.jpg", (10, 0, 0)), "hat", "train"),
        (jpeg(data / "train/shirt/t2.jpg", (20, 0, 0)), "shirt", "train"),
        (jpeg(data / "validation/hat/v1.jpg", (30, 0, 0)), "hat", "validation"),
        (jpeg(data / "calibration/hat/c1.jpg", (40, 0, 0)), "hat", "calibration"),
        (jpeg(data / "test/shirt/s1.jpg", (50, 0, 0)), "shirt", "test"),
    ]
    with open(art / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "split"), *rows])
    (art / "labels.txt").write_text("hat\nshirt\n")
    (art / "prepare_report.json").write_text(json.dumps({"data_dir": str(data), "counts": {}}))

    moved = tmp_path / "processed"
    good = jpeg(moved / "hat/new.jpg", (200, 10, 10))
    twin = moved / "hat/new-again.jpg"
    twin.write_bytes(Path(good).read_bytes())
    in_cal = moved / "hat/c1-copy.jpg"
    in_cal.write_bytes(Path(rows[3][0]).read_bytes())
    in_test = moved / "shirt/s1-copy.jpg"
    in_test.parent.mkdir()
    in_test.write_bytes(Path(rows[4][0]).read_bytes())
    odd = jpeg(moved / "socks/x.jpg", (0, 200, 0))
    broken = moved / "hat/broken.jpg"
    broken.write_bytes(b"not a photo")
    fb = tmp_path / "feedback.csv"
    with open(fb, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "previous_folder", "sha256"])
        for path, label in (
            (good, "hat"),
            (twin, "hat"),
            (in_cal, "hat"),
            (in_test, "shirt"),
            (odd, "socks"),
            (broken, "hat"),
            (moved / "hat/gone.jpg", "hat"),
        ):
            w.writerow([path, label, "_uncertain", "x"])

    report = extra_labels.apply(art, fb)

    assert report["extra_labels"]["added"] == 1 and report["extra_labels"]["rows"] == 7
    assert [(Path(d["path"]).name, d["reason"]) for d in report["extra_labels"]["dropped"]] == [
        ("new-again.jpg", "duplicate"),
        ("c1-copy.jpg", "in_calibration"),
        ("s1-copy.jpg", "in_test"),
        ("x.jpg", "unknown_label"),
        ("broken.jpg", "not_an_image"),
        ("gone.jpg", "missing"),
    ]
    manifest = read_manifest(art / "manifest.csv")
    assert [(Path(e.path).name, e.split) for e in manifest] == [
        ("t1.jpg", "train"),
        ("t2.jpg", "train"),
        ("new.jpg", "train"),
        ("v1.jpg", "validation"),
        ("c1.jpg", "calibration"),
        ("s1.jpg", "test"),
    ]
    assert report["counts"]["train"] == {"hat": 2, "shirt": 1}
    assert report["counts"]["calibration"] == {"hat": 1}
    assert report["totals"] == {"train": 3, "validation": 1, "test": 1, "calibration": 1}
    saved = json.loads((art / "prepare_report.json").read_text())
    assert saved["extra_labels"] == report["extra_labels"]
    assert extra_labels.training_record(saved) == {"added": 1, "dropped": 6, "source": str(fb)}


def test_feedback_without_label_column_is_refused(tmp_path):
    fb = tmp_path / "feedback.csv"
    fb.write_text("path,folder\n/x.jpg,hat\n")
    with pytest.raises(ValueError, match="missing column"):
        extra_labels.read_feedback(fb)
