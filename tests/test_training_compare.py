"""``python -m training compare``: committed versions 1 and 2 scored side by side in one process.

A two-row manifest built here (a real test-split shoe and a kept-out Blazer photo) goes
through each version's ``serving_default`` signature upright and turned; version 1 is scored at
the job's top-1 >= 0.5 rule, version 2 at its own abstain outputs. The answers are the committed
versions' own, asserted exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT

from training import cli
from training.manifest import Entry, write_manifest
from training.sources import OTHER_LABEL

OFFCLASS_DIR = Path(os.environ.get("FASHION_OFFCLASS_DIR", DATA_DIR.parent / "clothing-offclass"))
SHOE = DATA_DIR / "test" / "shoes" / "8648344c-5acb-4f5d-93a1-7e89489489bf.jpg"
BLAZER = OFFCLASS_DIR / "Blazer" / "64937043-1a83-4440-a5b3-c05f35bbe4fe.jpg"


@pytest.mark.e2e
def test_compare_scores_both_versions_at_their_own_rule(tmp_path, capsys):
    write_manifest(
        tmp_path / "manifest.csv",
        [
            Entry(str(SHOE), "shoes", "test"),
            Entry(str(BLAZER), OTHER_LABEL, "offclass_labels"),
        ],
    )
    code = cli.main(
        [
            "compare",
            "--artifacts",
            str(tmp_path),
            "--base-path",
            str(ROOT / "models" / "fashion"),
            "--versions",
            "1",
            "2",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    v1, v2 = result["versions"]["1"], result["versions"]["2"]
    assert v1["rule"] == "top-1 >= 0.5"
    assert v2["rule"] == "signature abstain"
    for version in (v1, v2):
        assert version["accuracy"] == 1.0
        assert version["filing"]["n"] == 1
    # the Blazer: version 1 (no rule) files it, version 2 abstains on it
    assert v1["off_category_filed"] == {"offclass_labels": {"n": 1, "filed": 1.0}}
    assert v2["off_category_filed"] == {"offclass_labels": {"n": 1, "filed": 0.0}}
    # version 2 files the shoe upright and turned each way under shoes
    assert v2["filing"]["filed"] == 1 and v2["filing"]["precision"] == 1.0
    assert {a: v2["turned"][a]["filed_right"] for a in ("90", "180", "270")} == {
        "90": 1.0,
        "180": 1.0,
        "270": 1.0,
    }
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| figure | version 1 | version 2 |"
    assert "| accuracy | 1.000 | 1.000 |" in table


@pytest.mark.unit
def test_compare_refuses_bad_inputs_with_one_line_before_loading_tensorflow(tmp_path, capsys):
    base = ["--base-path", str(ROOT / "models" / "fashion")]

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(["compare", "--artifacts", str(tmp_path), *base, *args])
        return code, capsys.readouterr().err

    assert run("--versions", "1") == (
        2,
        f"error: {tmp_path / 'manifest.csv'} not found: run python -m training prepare first "
        "(make train's first step), or pass --artifacts with a prepared folder\n",
    )
    write_manifest(tmp_path / "manifest.csv", [Entry(str(SHOE), "shoes", "test")])
    assert run("--versions", "7") == (
        2,
        f"error: no exported version 7 under {ROOT / 'models' / 'fashion'} (a SavedModel with "
        "assets.extra/labels.txt); versions there: 1, 2, 3\n",
    )
    assert run("--versions", "2", "1", "2") == (2, "error: version 2 is given twice\n")
    assert run("--versions", "1", "--min-confidence", "1.5") == (
        2,
        "error: --min-confidence must be in (0, 1], got 1.5\n",
    )
