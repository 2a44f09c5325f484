"""``python -m training prepare`` on the labelled-CSV layouts: Kaggle ``styles.csv`` + ``images/``
and ``--labels-csv``. The Kaggle layout is the fake of tests/support/kaggle_layout.py (real photos,
real header, an extra-comma row, a row without image, an image without row, labels with spaces and
non-ASCII letters). Nothing here loads TensorFlow.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from support import kaggle_layout

from training import layouts
from training.cli import main

CHOSEN = ["Casual Shoes", "Jupes d'été", "Track Pants"]


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> Path:
    return kaggle_layout.build(tmp_path_factory.mktemp("kaggle") / "fashion-dataset")


def prepare(*args: str) -> int:
    return main(["prepare", *args])


def manifest_rows(artifacts: Path) -> list[dict]:
    with open(artifacts / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def report_of(artifacts: Path) -> dict:
    return json.loads((artifacts / "prepare_report.json").read_text(encoding="utf-8"))


def test_kaggle_top_classes_manifest_and_report_exactly(kaggle, tmp_path, capsys):
    out = tmp_path / "out"
    assert prepare("--data-dir", str(kaggle), "--artifacts", str(out), "--top-classes", "3") == 0
    assert (out / "labels.txt").read_bytes() == "".join(f"{c}\n" for c in CHOSEN).encode()

    report = report_of(out)
    assert report["layout"] == "kaggle_styles"
    assert report["source"] == str(kaggle / "styles.csv")
    assert report["label_column"] == "articleType"
    assert report["class_choice"] == {"rule": "top", "n": 3}
    assert report["classes"] == [
        {"label": "Casual Shoes", "rows": 8, "kept": 8},
        {"label": "Jupes d'été", "rows": 7, "kept": 6},
        {"label": "Track Pants", "rows": 7, "kept": 7},
    ]
    assert report["other_labels"] == {"Caps": 3, "Tshirts": 2}
    # 70/15/15 per class, rounded: 8 -> 6/1/1, 7 -> 5/1/1, 6 -> 4/1/1.
    assert report["counts"] == {
        "train": {"Casual Shoes": 6, "Jupes d'été": 4, "Track Pants": 5},
        "validation": {"Casual Shoes": 1, "Jupes d'été": 1, "Track Pants": 1},
        "test": {"Casual Shoes": 1, "Jupes d'été": 1, "Track Pants": 1},
    }
    assert report["totals"] == {"train": 15, "validation": 3, "test": 3}
    assert report["rows"] == {
        "read": 31,
        "usable": 27,
        "skipped": 5,
        "repaired": 1,
        "not_chosen": 5,
        "kept": 21,
    }
    assert [(r["line"], r["id"], r["reason"]) for r in report["skipped_rows"]] == [
        (13, "10009", "no_image"),
        (24, "30007", "corrupt_image"),
        (30, "60001", "malformed_row"),
        (31, "60002", "empty_label"),
        (32, "10001", "duplicate"),
    ]
    assert report["skipped_rows"][0]["detail"] == "images/10009.jpg does not exist"
    assert report["skipped_rows"][2]["detail"] == "3 fields, the header has 10"
    assert report["skipped_rows"][4]["detail"] == "id 10001 already on line 2"
    assert report["repaired_rows"] == [
        {"line": 6, "id": "20003", "productDisplayName": "Puma Men, Women Pants, Grey"}
    ]
    assert report["images_without_row"] == {"count": 1, "examples": ["99999.jpg"]}
    assert [Path(r["path"]).name for r in report["rejected"]] == ["30007.jpg"]

    rows = manifest_rows(out)
    by_id = {Path(r["path"]).stem: r for r in rows}
    assert len(rows) == len(by_id) == 21
    assert all(Path(r["path"]) == kaggle / "images" / f"{i}.jpg" for i, r in by_id.items())
    assert by_id["20003"]["label"] == "Track Pants"  # the extra-comma row is kept
    assert set(by_id) == {
        *(f"1000{i}" for i in range(1, 9)),
        *(f"2000{i}" for i in range(1, 8)),
        *(f"3000{i}" for i in range(1, 7)),
    }
    for label, (n_train, n_val, n_test) in {
        "Casual Shoes": (6, 1, 1),
        "Jupes d'été": (4, 1, 1),
        "Track Pants": (5, 1, 1),
    }.items():
        splits = [r["split"] for r in rows if r["label"] == label]
        counted = [splits.count(s) for s in ("train", "validation", "test")]
        assert counted == [n_train, n_val, n_test]

    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "layout": "kaggle_styles",
        "totals": {"train": 15, "validation": 3, "test": 3},
        "labels": CHOSEN,
        "rejected": 1,
        "skipped_rows": 5,
    }


def test_kaggle_default_keeps_the_ten_most_frequent(kaggle, tmp_path):
    out = tmp_path / "out"
    assert prepare("--data-dir", str(kaggle), "--artifacts", str(out)) == 0
    report = report_of(out)
    assert report["class_choice"] == {"rule": "top", "n": 10}
    assert report["labels"] == ["Caps", "Casual Shoes", "Jupes d'été", "Track Pants", "Tshirts"]
    assert report["counts"]["test"] == {
        "Caps": 1,
        "Casual Shoes": 1,
        "Jupes d'été": 1,
        "Track Pants": 1,
        "Tshirts": 1,
    }
    assert report["other_labels"] == {}


def test_kaggle_classes_list_and_label_column(kaggle, tmp_path):
    listed = tmp_path / "listed"
    assert (
        prepare("--data-dir", str(kaggle), "--artifacts", str(listed), "--classes", "Caps,Tshirts")
        == 0
    )
    report = report_of(listed)
    assert report["class_choice"] == {"rule": "list"}
    assert report["classes"] == [
        {"label": "Caps", "rows": 3, "kept": 3},
        {"label": "Tshirts", "rows": 2, "kept": 2},
    ]
    assert len(manifest_rows(listed)) == 5

    by_sub = tmp_path / "sub"
    assert (
        prepare(
            "--data-dir",
            str(kaggle),
            "--artifacts",
            str(by_sub),
            "--label-column",
            "masterCategory",
        )
        == 0
    )
    report = report_of(by_sub)
    assert report["label_column"] == "masterCategory"
    # 60002 has an empty articleType but a masterCategory: under this column it lacks an image.
    assert report["classes"] == [
        {"label": "Accessories", "rows": 3, "kept": 3},
        {"label": "Apparel", "rows": 16, "kept": 15},
        {"label": "Footwear", "rows": 8, "kept": 8},
    ]
    assert [r["reason"] for r in report["skipped_rows"]] == [
        "no_image",
        "corrupt_image",
        "malformed_row",
        "no_image",
        "duplicate",
    ]


def test_kaggle_split_is_seeded(kaggle, tmp_path):
    runs = {}
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        out = tmp_path / name
        code = prepare("--data-dir", str(kaggle), "--artifacts", str(out), "--split-seed", seed)
        assert code == 0
        runs[name] = (out / "manifest.csv").read_bytes()
    assert runs["a"] == runs["b"] != runs["c"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "Caps,Sandals"], "no usable row has the label(s) ['Sandals']"),
        (["--classes", "Caps"], "at least two classes"),
        (["--top-classes", "0"], "must be >= 1"),
        (["--label-column", "colour"], "no column 'colour'"),
    ],
)
def test_kaggle_bad_choices_exit_2_with_one_line(kaggle, tmp_path, capsys, args, message):
    assert prepare("--data-dir", str(kaggle), "--artifacts", str(tmp_path / "o"), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "o" / "manifest.csv").exists()


def test_top_classes_refused_for_folder_sets(tmp_path, capsys):
    folder = tmp_path / "set"
    for label in ("hat", "skirt"):
        (folder / label).mkdir(parents=True)
    out = str(tmp_path / "o")
    code = prepare("--data-dir", str(folder), "--artifacts", out, "--top-classes", "1")
    assert code == 2
    assert "apply to styles.csv and --labels-csv" in capsys.readouterr().err


def test_kaggle_reader_keeps_quotes_on_their_line(tmp_path):
    root = tmp_path / "k"
    (root / "images").mkdir(parents=True)
    photos = kaggle_layout.source_photos("hat")
    for i in (1, 2):
        shutil.copyfile(photos[i], root / "images" / f"{i}.jpg")
    (root / "styles.csv").write_bytes(
        (
            "\ufeff" + kaggle_layout.HEADER + "\r\n"
            '1,Men,Accessories,Headwear,Caps,Black,Summer,2012,Casual,The "Best\r\n'
            "2,Men,Accessories,Headwear,Caps,Black,Summer,2012,Casual,Cap\u2028two\r\n"
        ).encode()
    )
    table = layouts.read_kaggle(root)
    assert [(r.line, r.key, r.label) for r in table.rows] == [(2, "1", "Caps"), (3, "2", "Caps")]
    assert table.skipped == [] and table.repaired == []


def test_labels_csv_relative_paths_quoting_and_skips(tmp_path, capsys):
    data = tmp_path / "shop"
    (data / "pics" / "a").mkdir(parents=True)
    shoes, hats = kaggle_layout.source_photos("shoes"), kaggle_layout.source_photos("hat")
    for i in range(3):
        shutil.copyfile(shoes[i], data / "pics" / "a" / f"s{i}.jpg")
        shutil.copyfile(hats[i], data / "pics" / f"h{i}.jpg")
    outside = tmp_path / "elsewhere.jpg"
    shutil.copyfile(hats[5], outside)
    (data / "labels.csv").write_text(
        "path,label,note\n"
        'pics/a/s0.jpg,"Shoes, casual",x\n'
        'pics/a/s1.jpg,"Shoes, casual",\n'
        'pics/a/s2.jpg,"Shoes, casual",\n'
        "pics/h0.jpg,Émile's Hats,\n"
        "pics/h1.jpg,Émile's Hats,\n"
        "pics/./h1.jpg,Émile's Hats,\n"
        f"{outside},Émile's Hats,\n"
        "pics/missing.jpg,Émile's Hats,\n"
        "pics/h2.jpg,,\n"
        "pics/h2.jpg\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert prepare("--labels-csv", str(data / "labels.csv"), "--artifacts", str(out)) == 0
    report = report_of(out)
    assert report["layout"] == "labels_csv"
    assert report["data_dir"] == str(data)
    assert report["class_choice"] == {"rule": "all"}
    assert report["classes"] == [
        {"label": "Shoes, casual", "rows": 3, "kept": 3},
        {"label": "Émile's Hats", "rows": 3, "kept": 3},
    ]
    assert [(r["line"], r["id"], r["reason"]) for r in report["skipped_rows"]] == [
        (7, "pics/./h1.jpg", "duplicate"),
        (9, "pics/missing.jpg", "no_image"),
        (10, "pics/h2.jpg", "empty_label"),
        (11, "pics/h2.jpg", "malformed_row"),
    ]
    paths = {r["path"]: r["label"] for r in manifest_rows(out)}
    assert paths == {
        str(data / "pics/a/s0.jpg"): "Shoes, casual",
        str(data / "pics/a/s1.jpg"): "Shoes, casual",
        str(data / "pics/a/s2.jpg"): "Shoes, casual",
        str(data / "pics/h0.jpg"): "Émile's Hats",
        str(data / "pics/h1.jpg"): "Émile's Hats",
        str(outside): "Émile's Hats",
    }
    assert (out / "labels.txt").read_text(encoding="utf-8") == "Shoes, casual\nÉmile's Hats\n"
    assert "skipped line 9 (no_image)" in capsys.readouterr().err


def test_labels_csv_without_the_columns_is_refused(tmp_path, capsys):
    (tmp_path / "l.csv").write_text("file,class\na.jpg,x\n")
    assert prepare("--labels-csv", str(tmp_path / "l.csv"), "--artifacts", str(tmp_path / "o")) == 2
    assert "lacks ['path', 'label']" in capsys.readouterr().err


def test_kaggle_calibration_part_of_validation(tmp_path):
    data = kaggle_layout.build_sized(tmp_path / "k", per_class=20)
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--artifacts", str(out), "--calibration", "0.5"]
    assert prepare(*argv) == 0
    report = report_of(out)
    assert report["split_config"]["calibration_of_validation"] == 0.5
    # 20 per class -> 14/3/3, then round(3 * 0.5) = 2 of the 3 validation images -> calibration.
    assert report["counts"] == {
        split: dict.fromkeys(CHOSEN, n)
        for split, n in (("train", 14), ("validation", 1), ("calibration", 2), ("test", 3))
    }
    assert report["repaired_rows"] == [
        {"line": line, "id": row_id, "productDisplayName": "Item 0, size M, cotton"}
        for line, row_id in ((2, "100000"), (22, "200000"), (42, "300000"))
    ]
    splits = [r["split"] for r in manifest_rows(out)]
    assert splits.count("calibration") == 6 and splits.count("validation") == 3
