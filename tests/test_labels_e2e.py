"""Any label set end to end: a Kaggle ``styles.csv`` layout with labels such as ``Casual Shoes``
and ``Jupes d'été`` goes through prepare, a tiny real training run, export, the real local model
server, the gateway and the nightly job, which files photos into folders named from those labels.

The training run is tiny on purpose (alpha 0.35, 64 px, one epoch on 15 photos): what is checked
is that the labels arrive intact everywhere, not that the model is good. Training and export run
as ``python -m ...`` subprocesses, as a user runs them; this process never loads TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import requests
from support import kaggle_layout

from contract.folders import folder_to_label, label_to_folder
from gateway.launcher import GatewayProcess
from serving.launcher import ModelServerProcess
from training.cli import main as training_main
from training.settings import REPO_ROOT, WEIGHTS_TEMPLATE

WEIGHTS_035 = REPO_ROOT.parent / "shared" / "weights" / WEIGHTS_TEMPLATE.format(alpha="0.35")
LABELS = ["Casual Shoes", "Jupes d'été", "Track Pants"]
FOLDERS = {
    "Casual Shoes": "Casual_Shoes",
    "Jupes d'été": "Jupes_d%27été",
    "Track Pants": "Track_Pants",
}
# Photos the model never trained on: the small set's test split, two of each class.
INCOMING = {"shoes": 2, "pants": 2, "skirt": 2}


def run_module(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root; generous timeout: the machine is shared."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("FASHION_DATA_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict:
    """prepare + train + export of the fake Kaggle layout; the paths involved."""
    root = tmp_path_factory.mktemp("labels-e2e")
    data = kaggle_layout.build(root / "kaggle")
    artifacts = root / "artifacts"
    argv = ["prepare", "--data-dir", str(data), "--artifacts", str(artifacts), "--top-classes", "3"]
    assert training_main(argv) == 0
    started = time.monotonic()
    train = run_module(
        "training",
        "train",
        "--artifacts",
        str(artifacts),
        "--alpha",
        "0.35",
        "--input-size",
        "64",
        "--weights",
        str(WEIGHTS_035),
        "--head-epochs",
        "1",
        "--finetune-epochs",
        "0",
        "--batch-size",
        "16",
        "--verbose",
        "0",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    base = root / "models" / "fashion"
    export = run_module(
        "export",
        "--model",
        str(artifacts / "model.keras"),
        "--artifacts",
        str(artifacts),
        "--base-path",
        str(base),
    )
    assert export.returncode == 0, export.stderr[-3000:]
    return {
        "data": data,
        "artifacts": artifacts,
        "base": base,
        "version": base / "1",
        "seconds": time.monotonic() - started,
    }


@pytest.fixture(scope="module")
def stack(published, tmp_path_factory):
    logs = tmp_path_factory.mktemp("labels-e2e-logs")
    with (
        ModelServerProcess(
            ["--model_name", "fashion", "--model_base_path", str(published["base"])],
            log_path=logs / "serving.log",
        ) as server,
        GatewayProcess(
            {"SERVING_GRPC_ADDRESS": server.grpc_address}, log_path=logs / "gateway.log"
        ) as gateway,
    ):
        yield gateway


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read().decode("utf-8"))


@pytest.mark.e2e
def test_labels_travel_with_the_version(published):
    extra = published["version"] / "assets.extra"
    assert (extra / "labels.txt").read_bytes() == "".join(f"{x}\n" for x in LABELS).encode()
    card = json.loads((extra / "model_card.json").read_text(encoding="utf-8"))
    assert card["labels"] == LABELS
    assert card["signature"]["inputs"]["images"]["shape"] == [-1, 64, 64, 3]


@pytest.mark.e2e
def test_a_set_without_off_category_photos_gets_a_threshold_only_rule(published):
    rule = json.loads((published["artifacts"] / "abstain_rule.json").read_text())
    assert rule["other_class_index"] is None and rule["min_known_probability"] is None
    assert 0.0 <= rule["min_confidence"] <= 1.0 and rule["temperature"] > 0
    assert rule["fitted_on"]["split"] == "validation"  # no calibration split was asked for
    assert rule["fitted_on"]["off_category_images"] == 0
    extra = published["version"] / "assets.extra"
    assert json.loads((extra / "abstain_rule.json").read_text()) == rule
    card = json.loads((extra / "model_card.json").read_text(encoding="utf-8"))
    assert card["abstain_rule"] == rule


@pytest.mark.e2e
def test_gateway_answers_with_the_labels(stack, published):
    rule = json.loads((published["artifacts"] / "abstain_rule.json").read_text())
    assert get_json(stack.url + "/classes")["classes"] == LABELS
    photo = kaggle_layout.source_photos("shoes", "test")[0]
    request = urllib.request.Request(
        stack.url + "/predict?top_k=3",
        data=photo.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read().decode("utf-8")
    prediction = json.loads(raw)["prediction"]
    assert sorted(k["label"] for k in prediction["top_k"]) == LABELS
    assert prediction["label"] == LABELS[prediction["class_id"]]
    assert sum(k["probability"] for k in prediction["top_k"]) == pytest.approx(1.0, abs=1e-4)
    # The threshold-only rule: every photo is "known"; abstain only below min_confidence.
    assert prediction["known_probability"] == pytest.approx(1.0)
    assert prediction["abstain"] == (prediction["confidence"] < rule["min_confidence"])
    assert prediction["abstain_reason"] == ("low_confidence" if prediction["abstain"] else None)


@pytest.mark.e2e
def test_nightly_job_files_into_folders_named_from_the_labels(stack, dirs):
    placed = {}
    for folder, n in INCOMING.items():
        for src in kaggle_layout.source_photos(folder, "test")[:n]:
            dest = dirs["incoming"] / f"{folder}-{src.name}"
            dest.write_bytes(src.read_bytes())
            placed[dest.name] = folder
    args = ["batch", "run", "--gateway", stack.url, "--settle-seconds", "0"]
    args += ["--min-confidence", "0", "--retry-backoff", "0"]
    for name in ("incoming", "processed", "quarantine", "results", "logs"):
        args += [f"--{name}", str(dirs[name])]
    job = run_module(*args)
    assert job.returncode == 0, job.stdout + job.stderr

    filed = {p.name: p.parent.name for p in dirs["processed"].rglob("*") if p.is_file()}
    assert set(filed) == set(placed)
    assert set(filed.values()) <= set(FOLDERS.values())
    report = pd.concat(
        pd.read_csv(p, keep_default_na=False) for p in dirs["results"].glob("*/report.csv")
    )
    categories = {Path(r.original_path).name: r.category for r in report.itertuples()}
    assert {
        Path(r.original_path).name: Path(r.destination).parent.name for r in report.itertuples()
    } == filed
    assert {name: folder_to_label(folder) for name, folder in filed.items()} == categories
    assert {label_to_folder(label) for label in categories.values()} == set(filed.values())
    assert not any(dirs["incoming"].iterdir())


@pytest.mark.e2e
def test_nightly_job_follows_the_versions_threshold_only_rule(stack, published, dirs):
    """Without --min-confidence the job obeys the version's rule: what the gateway marks as
    abstaining goes to _uncertain with reason low_confidence, the rest to its label's folder."""
    rule = json.loads((published["artifacts"] / "abstain_rule.json").read_text())
    photos = [p for folder in INCOMING for p in kaggle_layout.source_photos(folder, "test")[4:6]]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    answer = requests.post(stack.url + "/predict_batch", files=files, timeout=60).json()
    expected = {}
    for photo, item in zip(photos, answer["predictions"], strict=True):
        assert item["known_probability"] == pytest.approx(1.0)
        assert item["abstain"] == (item["confidence"] < rule["min_confidence"])
        expected[photo.name] = "_uncertain" if item["abstain"] else label_to_folder(item["label"])
        (dirs["incoming"] / photo.name).write_bytes(photo.read_bytes())
    args = ["batch", "run", "--gateway", stack.url, "--settle-seconds", "0", "--retry-backoff", "0"]
    for name in ("incoming", "processed", "quarantine", "results", "logs"):
        args += [f"--{name}", str(dirs[name])]
    job = run_module(*args)
    assert job.returncode == 0, job.stdout + job.stderr

    filed = {p.name: p.parent.name for p in dirs["processed"].rglob("*") if p.is_file()}
    assert filed == expected
    report = pd.concat(
        pd.read_csv(p, keep_default_na=False) for p in dirs["results"].glob("*/report.csv")
    )
    for row in report.itertuples():
        uncertain = expected[Path(row.original_path).name] == "_uncertain"
        assert row.abstain_reason == ("low_confidence" if uncertain else "")
        assert float(row.known_probability) == pytest.approx(1.0)


@pytest.mark.e2e
def test_export_refuses_labels_sharing_a_folder(published, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("Casual Shoes\ncasual shoes\nTrack Pants\n", encoding="utf-8")
    export = run_module(
        "export",
        "--model",
        str(published["artifacts"] / "model.keras"),
        "--labels",
        str(labels),
        "--base-path",
        str(tmp_path / "fashion"),
        "--no-abstain-rule",
    )
    assert export.returncode == 1
    assert "'Casual Shoes', 'casual shoes' -> the same folder 'Casual_Shoes'" in export.stderr
    assert not (tmp_path / "fashion").exists() or not any((tmp_path / "fashion").iterdir())
