"""`make run` from a fresh clone: the newcomer's first command, end to end on real photos.

Cloning (not copying the working tree) makes a missing install step or an uncommitted file fail
here. The clone builds its own .venv with `make install`, seeds data/incoming/ with the data set's
test split, serves the committed model and runs the nightly job through the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATA_DIR as _DATA_DIR
from conftest import ROOT

from contract import IMAGE_SUFFIXES

DATA_DIR = _DATA_DIR.resolve()


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


# Its own subprocess limit is 1,500 s for `make run`; pytest's global 900 s must not cut it first.
@pytest.mark.timeout(1800)
def test_make_run_in_a_fresh_clone_files_every_seeded_photo(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {**os.environ, "FASHION_DATA_DIR": str(DATA_DIR)}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        ["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=1500
    )
    output = result.stdout + result.stderr
    ours = "\n".join(line for line in result.stdout.splitlines() if line.startswith("[make run]"))
    assert result.returncode in (0, 1), f"{ours}\n--- stderr tail:\n{result.stderr[-2000:]}"

    seeded = _images(DATA_DIR / "test")
    assert len(seeded) == 372
    assert "copied the 372 test-split photos" in output
    processed = _images(clone / "data/processed_batches")
    quarantined = _images(clone / "data/quarantine")
    assert _images(clone / "data/incoming") == []
    assert len(processed) + len(quarantined) == 372
    assert sorted(p.name for p in processed + quarantined) == sorted(p.name for p in seeded)

    # Seeded as <true class>/<file>. The latest version (3) files 0.742 of the test photos at
    # 0.967 precision, version 2 0.737 at 0.989, version 1 at its job default 0.901 at 0.964 (one
    # run, README); through the job, the same within a few photos (Pillow decoding here, the
    # evaluation's pipeline there). Issue 11's bar is precision 0.95.
    truth = {p.name: p.parent.name for p in seeded}
    filed = [p for p in processed if p.parent.name != "_uncertain"]
    correct = sum(truth[p.name] == p.parent.name for p in filed)
    assert len(filed) >= 0.70 * 372, len(filed)
    assert correct / len(filed) >= 0.95, (correct, len(filed))

    reports = [d for d in (clone / "results/batch_results").iterdir() if d.is_dir()]
    assert len(reports) == 1
    summary = json.loads((reports[0] / "summary.json").read_text())
    assert summary["files"] == 372
    rows = pd.read_csv(reports[0] / "report.csv")
    assert len(rows) == 372
    assert sorted(Path(p).name for p in rows["original_path"]) == sorted(truth)
    assert (reports[0] / "report.html").is_file()
    assert list((clone / "logs").glob("*.log"))
    assert "stopping gateway and model server" in output
