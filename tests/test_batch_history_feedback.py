"""History rows from a real ledger and summaries, and which hand moves count as corrections.

No services: the ledger is the job's own (batch/ledger.py), filled the way the runner fills it,
and the files are real bytes on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from batch import feedback, history
from batch.ledger import Ledger

pytestmark = pytest.mark.unit


def _summary(run_id: str, **extra) -> dict:
    return {
        "run_id": run_id,
        "dry_run": False,
        "exit_code": 0,
        "files": 7,
        "counts_by_status": {"filed": 4, "uncertain": 2, "quarantined": 1},
        "counts_by_category": {"hat": 3, "shoes": 1, "_uncertain": 2},
        "confidence": {"mean": 0.8125},
        "model_versions": [2],
        "duration_seconds": 1.5,
        "images_per_second": 4.0,
        **extra,
    }


def _file_one(
    ledger: Ledger,
    source: str,
    sha: str,
    dest: Path,
    *,
    outcome: str = "category",
    category: str = "shoes",
    confidence: float = 0.9,
    version: int = 3,
    finished_by: str = "r1",
) -> int:
    """Takes one file through the ledger as run r1 classifies it and ``finished_by`` files it."""
    row = ledger.discover(source, sha, 7, "r1")
    ledger.classify(
        row.id,
        outcome=outcome,
        category=category,
        confidence=confidence,
        top3=None,
        model_version=version,
        error_code=None,
        error_message=None,
        run_id="r1",
    )
    ledger.start_move(row.id, str(dest))
    ledger.finish(row.id, "filed", finished_by)
    return row.id


def test_history_counts_uncertain_per_reason_and_links_reports(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for run_id in ("20261201T020000Z-aaaaaa", "20261202T020000Z-bbbbbb"):
        ledger.begin_run(run_id)
        ledger.finish_run(run_id, 0, str(tmp_path / run_id / "report.csv"))
    ledger.begin_run("20261203T020000Z-cccccc")  # killed before its reports
    ledger.close()
    first, second = "20261201T020000Z-aaaaaa", "20261202T020000Z-bbbbbb"
    for run_id, extra in (
        (first, {}),
        (second, {"uncertain_by_reason": {"low_confidence": 1, "not_a_known_category": 1}}),
    ):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "summary.json").write_text(json.dumps(_summary(run_id, **extra)))
        (tmp_path / run_id / "report.html").write_text("<html></html>")
    (tmp_path / "20261130T020000Z-dddddd").mkdir()  # a dry run: summary only, no ledger row
    (tmp_path / "20261130T020000Z-dddddd" / "summary.json").write_text(
        json.dumps(_summary("20261130T020000Z-dddddd", dry_run=True))
    )

    rows = history.collect(tmp_path)
    assert [r.run_id[-6:] for r in rows] == ["dddddd", "aaaaaa", "bbbbbb", "cccccc"]
    dry, a, b, killed = rows
    assert dry.dry_run and dry.exit_code == 0 and dry.report is None
    assert a.filed == {"hat": 3, "shoes": 1} and a.uncertain == 2 and a.quarantined == 1
    assert a.uncertain_by_reason == {}
    assert b.uncertain_by_reason == {"low_confidence": 1, "not_a_known_category": 1}
    assert b.report == f"{second}/report.html" and b.model_versions == [2]
    assert killed.exit_code is None and killed.photos == 0
    frame = history.table(rows)
    assert frame["uncertain"].tolist() == [2, 2, "2 (low_confidence:1,not_a_known_category:1)", 0]
    assert frame["photos"].tolist() == [7, 7, 7, 0]

    index = history.refresh_index(tmp_path).read_text()
    assert index.count('href="') == 2
    assert index.index(second) < index.index(first)  # newest first
    assert (tmp_path / "trends.png").is_file()


def test_only_moves_out_of_the_filed_place_are_corrections(tmp_path):
    processed = tmp_path / "processed"
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = Ledger(ledger_path)
    ledger.begin_run("r1")
    files = {}
    for name, folder, outcome in (
        ("a.jpg", "_uncertain", "uncertain"),  # moved to hat/: a correction
        ("b.jpg", "shirt", "category"),  # renamed inside shirt/: not one
        ("c.jpg", "shirt", "category"),  # copied to hat/, original stays: not one
        ("d.jpg", "_uncertain", "uncertain"),  # moved to _other/: not a label folder
    ):
        dest = processed / folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f"photo {name}".encode())
        sha = hashlib.sha256(dest.read_bytes()).hexdigest()
        _file_one(
            ledger,
            f"/in/{name}",
            sha,
            dest,
            outcome=outcome,
            category="t-shirt",
            confidence=0.4,
            version=1,
        )
        files[name] = dest
    ledger.close()
    (processed / "hat").mkdir()
    os.rename(files["a.jpg"], processed / "hat" / "a-renamed.jpg")
    os.rename(files["b.jpg"], processed / "shirt" / "b2.jpg")
    (processed / "hat" / "c-copy.jpg").write_bytes(files["c.jpg"].read_bytes())
    (processed / "_other").mkdir()
    os.rename(files["d.jpg"], processed / "_other" / "d.jpg")
    (processed / "hat" / "new.jpg").write_bytes(b"never filed by the job")

    found = feedback.find_corrections(processed, ledger_path)
    assert [(Path(c.path).name, c.label, c.previous_folder) for c in found] == [
        ("a-renamed.jpg", "hat", "_uncertain")
    ]
    assert found[0].predicted == "t-shirt" and found[0].confidence == 0.4
    assert found[0].run_id == "r1"
    out = feedback.write_csv(tmp_path / "fb" / "feedback.csv", found)
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,previous_folder,predicted,confidence,run_id,moved_at,sha256"
    assert lines[1].startswith(
        f"{processed / 'hat' / 'a-renamed.jpg'},hat,_uncertain,t-shirt,0.4,r1,"
    )


def test_a_run_that_sent_no_image_has_no_rate_not_zero(tmp_path, capsys):
    """A run that only finished a killed run's files sent nothing: its rate is none, not 0."""
    from batch import reports

    ledger = Ledger(tmp_path / "ledger.sqlite")
    # the killed run r1 answered it; r2 only moved it
    row_id = _file_one(ledger, "/in/a.jpg", "aa", Path("/out/shoes/a.jpg"), finished_by="r2")
    table = reports.build_table([ledger.get(row_id)], "r2")
    ledger.close()
    results = tmp_path / "results"
    reports.write_reports(
        table,
        results / "r2",
        run_id="r2",
        duration=0.5,
        images_sent=0,
        exit_code=0,
        dry_run=False,
    )
    summary = json.loads((results / "r2" / "summary.json").read_text())
    assert (summary["images_sent"], summary["images_per_second"]) == (0, None)
    page = (results / "r2" / "report.html").read_text()
    assert "no image answered by the gateway" in page and "images/s" not in page

    assert history.main(["--results", str(results), "--no-index"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[-5:] == ["duration_s", "images_s", "exit", "model", "drift"]
    assert line.split() == ["r2", "1", "1", "0", "0", "0", "0.9", "0.5", "-", "0", "3"]
