"""The nightly job over several nights (issue 16), against the real local model server and gateway
serving the committed release model: history and its index page, drift against the trailing
nights, the Prometheus textfile checked by the real ``promtool``, and corrections made by moving
files that become training data through ``python -m training prepare --extra-labels``.

Photos are real: the data set's test split for the nights, its train split for the corrections.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT
from support.model_config import pinned_server_args

from gateway.launcher import GatewayProcess
from serving.launcher import ModelServerProcess

pytestmark = pytest.mark.e2e

MODEL_BASE = Path(os.environ.get("FASHION_TEST_MODEL_BASE", ROOT / "models" / "fashion"))
DATA = DATA_DIR
PHOTOS_PER_NIGHT = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The real model server and gateway, started once for the module."""
    logs = tmp_path_factory.mktemp("nights-stack-logs")
    with (
        ModelServerProcess(
            pinned_server_args(logs, MODEL_BASE, [1]),  # figures measured on version 1
            log_path=logs / "serving.log",
            start_timeout=300,  # loading + warm-up took over 120 s on the shared 2-core host
        ) as server,
        GatewayProcess(
            {"SERVING_GRPC_ADDRESS": server.grpc_address}, log_path=logs / "gateway.log"
        ) as gateway,
    ):
        yield gateway


def place_all(photos: list[Path], incoming: Path) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    old = time.time() - 60
    for p in photos:
        dest = incoming / f"{p.parent.name}-{p.name}"
        shutil.copyfile(p, dest)
        os.utime(dest, (old, old))


def job(dirs, gateway_url: str, *extra: str, command: str = "run") -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "batch", command]
    if command == "run":
        args += ["--gateway", gateway_url, "--settle-seconds", "0", "--retry-backoff", "0"]
        args += ["--models-dir", str(MODEL_BASE)]
        for name in ("incoming", "processed", "quarantine", "results", "logs"):
            args += [f"--{name}", str(dirs[name])]
    return subprocess.run(
        [*args, *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def summary(report_dir: Path) -> dict:
    return json.loads((report_dir / "summary.json").read_text())


def test_four_nights_history_drift_and_metrics(stack, dirs, tmp_path):
    test_photos = sorted((DATA / "test").glob("*/*.jpg"))
    random.Random(16).shuffle(test_photos)
    shoes_pool = [p for p in test_photos if p.parent.name == "shoes"]
    nights = [test_photos[i * PHOTOS_PER_NIGHT : (i + 1) * PHOTOS_PER_NIGHT] for i in range(3)]
    used = {p for n in nights for p in n}
    nights.append([p for p in shoes_pool if p not in used][:25])
    prom = tmp_path / "textfile" / "fashion_batch.prom"

    run_dirs = []
    for i, photos in enumerate(nights):
        place_all(photos, dirs["incoming"])
        proc = job(dirs, stack.url, "--metrics-textfile", str(prom))
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_dirs.append(
            max(
                (p for p in dirs["results"].iterdir() if p.is_dir()),
                key=lambda p: p.stat().st_mtime,
            )
        )
        assert len({d.name for d in run_dirs}) == i + 1

        if i == 2:  # three nights: the history has three rows, the index links three reports
            hist = job(dirs, stack.url, "--results", str(dirs["results"]), command="history")
            assert hist.returncode == 0, hist.stderr
            lines = hist.stdout.strip().splitlines()
            assert len(lines) == 1 + 3, hist.stdout
            for line, run_dir in zip(lines[1:], run_dirs, strict=True):
                s = summary(run_dir)
                cells = line.split()
                assert cells[0] == run_dir.name
                assert int(cells[3]) == PHOTOS_PER_NIGHT == s["files"]
            index = (dirs["results"] / "index.html").read_text()
            for run_dir in run_dirs:
                assert f'href="{run_dir.name}/report.html"' in index
                assert (run_dir / "report.html").is_file()
            assert index.count('href="') == 3
            assert (dirs["results"] / "trends.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from batch import history

    rows = history.collect(dirs["results"])
    assert [r.run_id for r in rows] == [d.name for d in run_dirs]
    for row, run_dir, photos in zip(rows, run_dirs, nights, strict=True):
        report = read_csv(run_dir / "report.csv")
        filed = {}
        for r in report:
            if r["status"] == "filed":
                filed[r["category"]] = filed.get(r["category"], 0) + 1
        assert row.photos == len(photos) == len(report)
        assert row.filed == filed
        assert row.uncertain == sum(r["status"] == "uncertain" for r in report)
        assert sum(filed.values()) + row.uncertain == len(photos)
        assert row.exit_code == 0 and row.model_versions == [1]
        assert row.report == f"{run_dir.name}/report.html"
        # every photo filed by that run is in its folder
        for r in report:
            assert Path(r["destination"]).is_file()

    verdicts = [summary(d)["drift"] for d in run_dirs]
    assert [v["status"] for v in verdicts] == [
        "insufficient_data",
        "insufficient_data",
        "ok",
        "drift",
    ]
    assert verdicts[2]["baseline"]["nights"] == 2 and verdicts[2]["flagged"] == []
    assert verdicts[3]["baseline"]["nights"] == 3
    assert verdicts[3]["baseline"]["photos"] == 3 * PHOTOS_PER_NIGHT
    assert verdicts[3]["category_mix"]["flagged"] is True
    assert verdicts[3]["category_mix"]["psi"] > 1
    for v in verdicts:  # the model card was readable: compared, never the reason for a flag
        assert v["model_card"]["path"] == str(MODEL_BASE / "1/assets.extra/model_card.json")
        assert v["model_card"]["test_accuracy"] == pytest.approx(0.9059, abs=1e-4)
    assert "Drift: drift" in (run_dirs[3] / "report.html").read_text()
    log = next(dirs["logs"].glob(f"batch-{run_dirs[3].name}.log")).read_text()
    assert "WARNING drift drift: drift in category_mix" in log
    assert history.table(rows)["drift"].tolist()[-1] == "drift"

    # the textfile of the last run: promtool accepts it; last success = the ledger's last end
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=prom.read_text(), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    db = sqlite3.connect(dirs["results"] / "ledger.sqlite")
    finished = db.execute("SELECT MAX(finished_at) FROM runs WHERE exit_code = 0").fetchone()[0]
    db.close()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in prom.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert values["fashion_batch_last_success_timestamp_seconds"] == pytest.approx(
        datetime.fromisoformat(finished).timestamp(), abs=1e-3
    )
    assert values['fashion_batch_last_run_drift_flagged{aspect="category_mix"}'] == 1.0
    assert (
        values['fashion_batch_last_run_photos{outcome="filed"}']
        + values['fashion_batch_last_run_photos{outcome="uncertain"}']
        == 25
    )
    assert values["fashion_batch_last_run_model_version"] == 1.0
    assert (
        values["fashion_batch_last_run_end_timestamp_seconds"]
        >= values["fashion_batch_last_run_start_timestamp_seconds"]
    )


def test_photos_moved_by_hand_become_train_labels(stack, dirs, tmp_path):
    train = DATA / "train"
    hats = sorted((train / "hat").glob("*.jpg"))[:3]
    shirts = sorted((train / "shirt").glob("*.jpg"))[:2]
    place_all([*hats, *shirts], dirs["incoming"])
    proc = job(dirs, stack.url, "--min-confidence", "1.0")  # everything to _uncertain
    assert proc.returncode == 0, proc.stderr[-2000:]
    uncertain = dirs["processed"] / "_uncertain"
    assert len(list(uncertain.iterdir())) == 5

    # a person moves the three hats into hat/ (one renamed) and one shirt into shirt/
    (dirs["processed"] / "hat").mkdir(parents=True, exist_ok=True)
    (dirs["processed"] / "shirt").mkdir(parents=True, exist_ok=True)
    moved_hats = []
    for i, p in enumerate(hats):
        src = uncertain / f"hat-{p.name}"
        dest = dirs["processed"] / "hat" / (f"renamed-{i}.jpg" if i == 0 else src.name)
        src.rename(dest)
        moved_hats.append(str(dest))
    (uncertain / f"shirt-{shirts[0].name}").rename(dirs["processed"] / "shirt" / "s.jpg")

    fb = job(
        dirs,
        stack.url,
        "--processed",
        str(dirs["processed"]),
        "--results",
        str(dirs["results"]),
        command="feedback",
    )
    assert fb.returncode == 0, fb.stderr
    rows = read_csv(dirs["results"] / "feedback.csv")
    assert len(rows) == 4
    hat_rows = [r for r in rows if r["label"] == "hat"]
    assert sorted(r["path"] for r in hat_rows) == sorted(moved_hats)
    assert {r["previous_folder"] for r in rows} == {"_uncertain"}
    run_id = summary(next(p for p in dirs["results"].iterdir() if p.is_dir()))["run_id"]
    assert {r["run_id"] for r in rows} == {run_id}

    # a small data set whose validation split already holds the moved shirt
    data = tmp_path / "data"
    layout = {
        "train": {"hat": train / "hat", "shirt": train / "shirt"},
        "validation": {"hat": DATA / "validation/hat", "shirt": DATA / "validation/shirt"},
        "test": {"hat": DATA / "test/hat", "shirt": DATA / "test/shirt"},
    }
    for split, classes in layout.items():
        for label, src in classes.items():
            (data / split / label).mkdir(parents=True)
            for p in sorted(src.glob("*.jpg"))[-4:]:
                shutil.copyfile(p, data / split / label / p.name)
    shutil.copyfile(shirts[0], data / "validation" / "shirt" / "moved-shirt-copy.jpg")

    artifacts = tmp_path / "artifacts"
    prep = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "prepare",
            "--data-dir",
            str(data),
            "--artifacts",
            str(artifacts),
            "--extra-labels",
            str(dirs["results"] / "feedback.csv"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prep.returncode == 0, prep.stderr
    assert json.loads(prep.stdout)["extra_labels_added"] == 3
    assert "s.jpg: in_validation" in prep.stderr
    manifest = read_csv(artifacts / "manifest.csv")
    feedback_paths = {r["path"] for r in rows}
    added = [r for r in manifest if r["path"] in feedback_paths]
    assert sorted(r["path"] for r in added) == sorted(moved_hats)
    assert {(r["label"], r["split"]) for r in added} == {("hat", "train")}
    assert sum(r["split"] == "train" for r in manifest) == 8 + 3
    report = json.loads((artifacts / "prepare_report.json").read_text())
    assert report["extra_labels"]["added"] == 3
    assert report["extra_labels"]["dropped"] == [
        {
            "path": str(dirs["processed"] / "shirt" / "s.jpg"),
            "label": "shirt",
            "reason": "in_validation",
        }
    ]
    assert report["counts"]["train"] == {"hat": 7, "shirt": 4}

    from training.extra_labels import training_record

    assert training_record(report)["added"] == 3  # what training_run.json and the card keep


def test_a_run_without_gateway_still_writes_its_metrics(dirs, tmp_path):
    """Exit 75 (gateway down): the textfile says so, and keeps the last success from the ledger."""
    from batch.ledger import Ledger

    dirs["results"].mkdir()
    ledger = Ledger(dirs["results"] / "ledger.sqlite")
    ledger.begin_run("20261201T020000Z-aaaaaa")
    ledger.finish_run("20261201T020000Z-aaaaaa", 1, None)
    ledger.close()
    prom = tmp_path / "fashion_batch.prom"
    proc = job(
        dirs, "http://127.0.0.1:9", "--health-timeout", "0.5", "--metrics-textfile", str(prom)
    )
    assert proc.returncode == 75, proc.stderr
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=prom.read_text(), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in prom.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert values["fashion_batch_last_run_exit_code"] == 75.0
    db = sqlite3.connect(dirs["results"] / "ledger.sqlite")
    finished = db.execute("SELECT finished_at FROM runs").fetchone()[0]
    db.close()
    assert values["fashion_batch_last_success_timestamp_seconds"] == pytest.approx(
        datetime.fromisoformat(finished).timestamp(), abs=1e-3
    )
    assert values['fashion_batch_last_run_photos{outcome="filed"}'] == 0.0
