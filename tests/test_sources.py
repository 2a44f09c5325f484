"""``prepare`` with version 2's extra sources: extra in-class photos, off-category photos and the
calibration split, on small folders of real photos (no TensorFlow)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from contract import read_labels
from training import sources
from training.cli import main
from training.manifest import read_manifest
from training.settings import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "data"
LABELS = ["hat", "shoes"]


def _copy(src: Path, dst: Path, n: int) -> None:
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.jpg"))[:n]:
        shutil.copy(path, dst / path.name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    small = SHARED / "clothing-dataset-small"
    for split, n in (("train", 4), ("validation", 4), ("test", 2)):
        for label in LABELS:
            _copy(small / split / label, root / "small" / split / label, n)
    for label in LABELS:
        _copy(small / "train" / label, root / "extra" / label, 4)  # any real photos will do
    for name, n in (("Blazer", 3), ("Polo", 8), ("Not_sure", 2)):
        _copy(SHARED / "clothing-offclass" / name, root / "offclass" / name, n)
    return root


def test_prepare_adds_extra_offclass_and_calibration(folders, tmp_path):
    argv = [
        "prepare",
        "--data-dir",
        str(folders / "small"),
        "--artifacts",
        str(tmp_path),
        "--extra-dir",
        str(folders / "extra"),
        "--offclass-dir",
        str(folders / "offclass"),
        "--calibration",
        "0.5",
        "--offclass-keep-out",
        "Blazer",
    ]
    assert main(argv) == 0
    assert read_labels(tmp_path / "labels.txt") == LABELS  # never the off-category label
    entries = read_manifest(tmp_path / "manifest.csv")
    counts = Counter((e.split, e.label) for e in entries)
    for label in LABELS:
        # train 4 + half of the 4 extra; validation 4 split 2/2, extra's other half split 1/1.
        assert counts["train", label] == 6
        assert counts["validation", label] == 3
        assert counts["calibration", label] == 3
        assert counts["test", label] == 2
    other = [e for e in entries if e.label == sources.OTHER_LABEL]
    origin = Counter((e.split, Path(e.path).parent.name) for e in other)
    # Polo (8): 25% kept out = 2, 15% calibration = 1, 10% validation = 1, rest train = 4.
    assert origin == {
        ("offclass_labels", "Blazer"): 3,
        ("offclass_random", "Polo"): 2,
        ("calibration", "Polo"): 1,
        ("validation", "Polo"): 1,
        ("train", "Polo"): 4,
    }
    assert not any("Not_sure" in e.path for e in entries)
    assert len({e.path for e in entries}) == len(entries)
    report = json.loads((tmp_path / "prepare_report.json").read_text())
    assert report["totals"]["calibration"] == 7
    assert report["sources"]["offclass_origin"]["offclass_labels"] == {"Blazer": 3}
    assert report["sources"]["config"]["offclass_exclude"] == ["Not_sure"]


def test_calibration_split_is_seeded_and_disjoint_from_validation(folders, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                ["prepare", "--data-dir", str(folders / "small"), "--artifacts", str(out)]
                + ["--calibration", "0.5"]
            )
            == 0
        )
        runs.append(read_manifest(out / "manifest.csv"))
    assert runs[0] == runs[1]
    calibration = {e.path for e in runs[0] if e.split == "calibration"}
    validation = {e.path for e in runs[0] if e.split == "validation"}
    assert len(calibration) == len(validation) == 4 and not calibration & validation


def test_extra_folder_with_an_unknown_label_is_refused(folders, tmp_path, capsys):
    bad = tmp_path / "extra"
    _copy(SHARED / "clothing-offclass" / "Polo", bad / "Polo", 1)
    argv = ["prepare", "--data-dir", str(folders / "small"), "--artifacts", str(tmp_path / "o")]
    assert main([*argv, "--extra-dir", str(bad)]) == 2
    assert "folders ['Polo'] are not labels" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.csv").exists()
