"""The nightly job end to end: ``python -m batch run`` against the real gateway and local model
server serving the committed release model ``models/fashion``.

One model server + gateway pair is started per module. Real photos come from the data set's test
split in ../shared (ones the release model classifies correctly, listed in ``PHOTOS``); every odd
file is generated here with Pillow. Crash tests SIGKILL the job at each failpoint
(batch/failpoints.py), rerun it, and count every file by content hash before and after.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATA_DIR, ROOT
from PIL import Image
from support.model_config import pinned_server_args

from batch import history, reports
from batch.gateway_client import GatewayClient
from batch.runner import LEDGER_NAME, run
from batch.settings import BatchSettings
from gateway.launcher import GatewayProcess, free_port
from serving.launcher import ModelServerProcess

MODEL_BASE = Path(os.environ.get("FASHION_TEST_MODEL_BASE", ROOT / "models" / "fashion"))
DATA = DATA_DIR

# Test-split photos the release model (models/fashion/1) labels correctly, two per class (its two
# most confident correct answers per class on the 372-photo test split, top-1 0.91-0.99).
PHOTOS = {
    "dress": [
        "28b09463-6bbb-491d-9ffc-f36df5c6b211.jpg",
        "4ceed2f1-8e20-4439-9c27-cceb8d2257a4.jpg",
    ],
    "hat": ["2a12baab-f020-42e3-8e6b-5d82e3ed0b55.jpg", "ff62e59f-c949-4f8e-8fca-798ab3e174c5.jpg"],
    "longsleeve": [
        "675319cc-b2f9-4b92-a126-472d4bcefdee.jpg",
        "ea1c48df-db46-4ceb-b168-3cd184975225.jpg",
    ],
    "outwear": [
        "8a17d01f-80f9-4e88-ad35-51d09dbb5b3c.jpg",
        "e36dcac4-c66b-4120-b828-89bfc0110716.jpg",
    ],
    "pants": [
        "f622318b-beb2-4f69-a99d-d8fbce6c2600.jpg",
        "c313f8f9-82ab-4b99-a30a-c9c1f9d0c33d.jpg",
    ],
    "shirt": [
        "adab8f60-032a-4c67-94fc-4d2902a27501.jpg",
        "9cedcef4-0138-4386-9fb5-d394971dc2f0.jpg",
    ],
    "shoes": [
        "8648344c-5acb-4f5d-93a1-7e89489489bf.jpg",
        "ab3238c6-2607-4850-8a17-3e9027867a6c.jpg",
    ],
    "shorts": [
        "78d2c5d2-b19d-422a-aff0-a6eb78291b4f.jpg",
        "1e302085-eeb2-46ff-a4f6-e9bb5cfa44b1.jpg",
    ],
    "skirt": [
        "2001dec1-1e0a-4c11-9d15-120b019b3dea.jpg",
        "5144499e-7848-4441-8873-7daab5386eec.jpg",
    ],
    "t-shirt": [
        "687dd295-0b3d-4fce-aefe-1e72aaf0e687.jpg",
        "a0cfdcc7-74f1-4189-b2e6-82ceb9c41085.jpg",
    ],
}


def photo(label: str, i: int = 0) -> Path:
    return DATA / "test" / label / PHOTOS[label][i]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The real model server and gateway, started once for the module."""
    logs = tmp_path_factory.mktemp("stack-logs")
    with (
        ModelServerProcess(
            pinned_server_args(logs, MODEL_BASE, [1]),  # PHOTOS were chosen for version 1
            log_path=logs / "serving.log",
        ) as server,
        GatewayProcess(
            {"SERVING_GRPC_ADDRESS": server.grpc_address}, log_path=logs / "gateway.log"
        ) as gateway,
    ):
        yield server, gateway


def place(src: Path | bytes, dest: Path, age: float = 60.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        dest.write_bytes(src)
    else:
        shutil.copyfile(src, dest)
    t = time.time() - age
    os.utime(dest, (t, t))
    return dest


def cli(
    dirs, gateway_url: str, *extra: str, env: dict | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--gateway",
        gateway_url,
        "--settle-seconds",
        "0",
        "--min-confidence",
        "0",
        "--retry-backoff",
        "0",
    ]
    for name in ("incoming", "processed", "quarantine", "results", "logs"):
        args += [f"--{name}", str(dirs[name])]
    return subprocess.run(
        [*args, *extra],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def hashes(*roots: Path) -> collections.Counter:
    """Content hashes of every input-like file (not sidecars) under the roots."""
    found: collections.Counter = collections.Counter()
    for root in roots:
        for p in root.rglob("*") if root.exists() else []:
            if p.is_file() and not p.name.endswith(reports.SIDECAR_SUFFIX):
                found[hashlib.sha256(p.read_bytes()).hexdigest()] += 1
    return found


def all_csv_rows(results: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False) for p in sorted(results.glob("*/report.csv"))]
    return pd.concat(frames, ignore_index=True)


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 3]


def test_real_photos_and_odd_files(stack, dirs):
    _, gateway = stack
    inc = dirs["incoming"]
    expected = {}
    for label in PHOTOS:
        for i in range(2):
            p = place(photo(label, i), inc / "shop" / photo(label, i).name)
            expected[p.name] = label
    twin = place(photo("shoes", 0), inc / "twin-of-shoes.jpg")  # byte-identical pair
    place(photo("hat", 0), inc / "a" / "same.jpg")  # one name in two sub-folders
    place(photo("hat", 1), inc / "b" / "same.jpg")
    place(b"this is a shopping list, not a photo\n", inc / "odd" / "text.jpg")
    place(truncated_jpeg(), inc / "odd" / "truncated.jpg")
    place(b"", inc / "odd" / "empty.png")
    place(photo("dress", 0), inc / "uploading.jpg", age=0.0)  # still being written
    place(b"x", inc / ".hidden.jpg")
    place(b"x", inc / "photo.jpg.part")

    proc = cli(dirs, gateway.url, "--settle-seconds", "30", "--chunk-size", "8")
    assert proc.returncode == 1, proc.stderr  # some quarantined

    for name, label in expected.items():
        assert (dirs["processed"] / label / name).is_file(), name
    assert (dirs["processed"] / "shoes" / twin.name).is_file()
    assert sorted(tree(dirs["processed"] / "hat"))[-2:] == ["same.jpg", "same_1.jpg"]
    assert (dirs["processed"] / "hat" / "same.jpg").read_bytes() == photo("hat", 0).read_bytes()
    assert (dirs["processed"] / "hat" / "same_1.jpg").read_bytes() == photo("hat", 1).read_bytes()
    assert len(tree(dirs["processed"])) == 20 + 3
    assert tree(dirs["quarantine"]) == [
        "empty.png",
        "empty.png.reason.json",
        "text.jpg",
        "text.jpg.reason.json",
        "truncated.jpg",
        "truncated.jpg.reason.json",
    ]
    reasons = {
        n: json.loads((dirs["quarantine"] / f"{n}.reason.json").read_text())["error_code"]
        for n in ("empty.png", "text.jpg", "truncated.jpg")
    }
    assert reasons == {
        "empty.png": "empty_file",
        "text.jpg": "not_an_image",
        "truncated.jpg": "corrupt_image",
    }
    assert tree(inc) == [".hidden.jpg", "photo.jpg.part", "uploading.jpg"]

    (report_dir,) = [p for p in dirs["results"].iterdir() if p.is_dir()]
    table = pd.read_csv(report_dir / reports.CSV_NAME, keep_default_na=False)
    assert list(table.columns) == reports.COLUMNS and len(table) == 26
    assert table["status"].value_counts().to_dict() == {"filed": 23, "quarantined": 3}
    filed = table[table["status"] == "filed"]
    assert (filed["category"] == filed["destination"].map(lambda d: Path(d).parent.name)).all()
    assert set(filed["model_version"]) == {1}
    assert (filed["top3"].str.count(";") == 2).all()
    shoes_sha = hashlib.sha256(photo("shoes", 0).read_bytes()).hexdigest()
    assert (table["sha256"] == shoes_sha).sum() == 2
    summary = json.loads((report_dir / reports.SUMMARY_NAME).read_text())
    assert summary["counts_by_status"] == {"filed": 23, "quarantined": 3}
    assert summary["counts_by_category"] == {
        label: 2 + (label == "shoes") + 2 * (label == "hat") for label in PHOTOS
    }
    assert summary["images_sent"] == 26 and summary["model_versions"] == [1]
    page = (report_dir / reports.HTML_NAME).read_text()
    assert page.count("<figure>") == 3 and (report_dir / reports.HISTOGRAM_NAME).is_file()
    assert len(list(dirs["logs"].glob("batch-*.log"))) == 1

    # Next night: the settled upload is taken, nothing filed before is sent again.
    os.utime(inc / "uploading.jpg", (time.time() - 60, time.time() - 60))
    again = cli(dirs, gateway.url, "--settle-seconds", "30")
    assert again.returncode == 0, again.stderr
    rows = all_csv_rows(dirs["results"])
    assert len(rows) == 27 and rows["original_path"].is_unique
    assert (dirs["processed"] / "dress" / "uploading.jpg").is_file()


def test_dry_run_moves_nothing(stack, dirs):
    _, gateway = stack
    place(photo("pants", 0), dirs["incoming"] / "p.jpg")
    place(b"", dirs["incoming"] / "e.jpg")
    before = tree(dirs["incoming"])
    proc = cli(dirs, gateway.url, "--dry-run")
    assert proc.returncode == 1, proc.stderr
    assert tree(dirs["incoming"]) == before
    assert not dirs["processed"].exists() and not dirs["quarantine"].exists()
    table = all_csv_rows(dirs["results"]).sort_values("original_path")
    assert table["status"].tolist() == ["would_quarantine", "would_file"]
    assert table["destination"].tolist() == [
        str(dirs["quarantine"] / "e.jpg"),
        str(dirs["processed"] / "pants" / "p.jpg"),
    ]
    # a dry run (ledger in memory) killed while writing its reports: its staging folder is gone
    # after the next run, which holds the same lock
    killed = cli(
        dirs, gateway.url, "--dry-run", env={"FASHION_BATCH_FAILPOINT": "during_reports:1"}
    )
    assert killed.returncode == -9, killed.stderr
    (staged,) = [p for p in dirs["results"].iterdir() if p.name.startswith(".staging-")]
    again = cli(dirs, gateway.url, "--dry-run")
    assert again.returncode == 1, again.stderr
    assert not staged.exists() and f"removing {staged}" in again.stderr
    assert tree(dirs["incoming"]) == before


def test_unreachable_gateway_exits_75_retry_later_and_touches_nothing(dirs):
    place(photo("hat", 0), dirs["incoming"] / "h.jpg")
    proc = cli(dirs, f"http://127.0.0.1:{free_port()}", "--health-timeout", "1")
    assert proc.returncode == 75
    assert "not healthy after 1 s" in proc.stderr
    assert tree(dirs["incoming"]) == ["h.jpg"]
    assert not dirs["processed"].exists() and not dirs["quarantine"].exists()


def test_api_key_required_by_the_gateway(stack, dirs):
    server, _ = stack
    place(photo("skirt", 0), dirs["incoming"] / "s.jpg")
    env = {"SERVING_GRPC_ADDRESS": server.grpc_address, "GATEWAY_API_KEY": "s3cret"}
    with GatewayProcess(env) as gateway:
        refused = cli(dirs, gateway.url, env={"GATEWAY_API_KEY": "", "FASHION_BATCH_API_KEY": ""})
        assert refused.returncode == 78, refused.stderr  # a wrong key is configuration
        assert "unauthorized" in refused.stderr
        assert tree(dirs["incoming"]) == ["s.jpg"] and not dirs["processed"].exists()
        accepted = cli(dirs, gateway.url, env={"FASHION_BATCH_API_KEY": "s3cret"})
        assert accepted.returncode == 0, accepted.stderr
        place(photo("skirt", 1), dirs["incoming"] / "t.jpg")  # the gateway's own variable
        shared = cli(dirs, gateway.url, env={"GATEWAY_API_KEY": "s3cret"})
        assert shared.returncode == 0, shared.stderr
    assert tree(dirs["processed"]) == ["skirt/s.jpg", "skirt/t.jpg"]


class _StopsGatewayClient(GatewayClient):
    """Stops the real gateway process just before its n-th /predict_batch request."""

    def __init__(self, gateway: GatewayProcess, stop_before: int, **kwargs) -> None:
        super().__init__(gateway.url, **kwargs)
        self.gateway, self.stop_before, self.calls = gateway, stop_before, 0

    def predict_batch(self, items, top_k=3, should_stop=lambda: False):
        self.calls += 1
        if self.calls == self.stop_before:
            self.gateway.stop()
        return super().predict_batch(items, top_k, should_stop)


def test_gateway_stopped_mid_run(stack, dirs):
    server, _ = stack
    labels = ["dress", "hat", "pants", "shoes", "shorts", "skirt"]  # the scan's (sorted) order
    for label in labels:
        place(photo(label, 0), dirs["incoming"] / f"{label}.jpg")
    settings = BatchSettings(
        incoming=dirs["incoming"],
        processed=dirs["processed"],
        quarantine=dirs["quarantine"],
        results=dirs["results"],
        logs=dirs["logs"],
        settle_seconds=0,
        min_confidence=0,
        chunk_size=2,
        concurrency=1,
        retries=1,
        retry_backoff=0,
        request_timeout=30,
    )
    env = {"SERVING_GRPC_ADDRESS": server.grpc_address}
    with GatewayProcess(env) as gateway:
        client = _StopsGatewayClient(gateway, stop_before=2, retries=1, backoff=0)
        first = run(settings, client=client)
    assert first.exit_code == 1
    assert first.counts == {"filed": 2, "left_in_incoming": 4}
    assert tree(dirs["incoming"]) == sorted(f"{lab}.jpg" for lab in labels[2:])
    with GatewayProcess(env) as gateway:
        second = run(BatchSettings(**{**settings.__dict__, "gateway": gateway.url}))
    assert second.exit_code == 0 and second.counts == {"filed": 4}
    assert tree(dirs["incoming"]) == []
    assert tree(dirs["processed"]) == sorted(f"{lab}/{lab}.jpg" for lab in labels)
    summary = json.loads((second.report_dir / reports.SUMMARY_NAME).read_text())
    assert summary["images_sent"] == 4


CRASH_POINTS = [
    ("after_classify", 3, False),
    ("before_move", 2, False),
    ("after_link_before_unlink", 4, False),
    ("after_move_before_ledger", 5, False),
    ("during_copy", 2, True),
    ("after_copy_before_link", 3, True),
    ("before_reports", 1, False),
    ("during_reports", 1, False),
    ("after_reports", 1, False),
]


@pytest.mark.parametrize(
    ("point", "nth", "cross_fs"), CRASH_POINTS, ids=[p[0] for p in CRASH_POINTS]
)
def test_sigkill_then_rerun_loses_and_duplicates_nothing(stack, dirs, point, nth, cross_fs):
    _, gateway = stack
    inc = dirs["incoming"]
    for label in ("hat", "shoes", "pants", "skirt", "t-shirt"):
        place(photo(label, 0), inc / f"{label}.jpg")
    place(photo("hat", 0), inc / "again" / "hat.jpg")  # identical content, same name
    place(b"not an image", inc / "junk.jpg")
    n_files = 7
    everywhere = (inc, dirs["processed"], dirs["quarantine"])
    before = hashes(*everywhere)
    env = {"FASHION_BATCH_FORCE_COPY": "1" if cross_fs else "0"}

    killed = cli(
        dirs,
        gateway.url,
        "--chunk-size",
        "2",
        "--concurrency",
        "1",
        env={**env, "FASHION_BATCH_FAILPOINT": f"{point}:{nth}"},
    )
    assert killed.returncode == -9, killed.stderr
    assert hashes(*everywhere) >= before  # nothing lost yet (a partial copy may add one)

    staged = [p for p in dirs["results"].iterdir() if p.name.startswith(".staging-")]
    if point == "during_reports":  # killed between its summary and its CSV: nothing published
        assert [sorted(q.name for q in p.iterdir()) for p in staged] == [
            ["confidence.png", "report.html", "summary.json"]
        ]
    else:
        assert staged == []

    rerun = cli(dirs, gateway.url, env=env)
    # 1: the rerun reports the quarantined junk.jpg; after_reports: the killed run's reports
    # were complete, so the rerun has nothing left to do or report.
    assert rerun.returncode == (0 if point == "after_reports" else 1), rerun.stderr

    assert hashes(*everywhere) == before  # every file exactly once
    assert tree(inc) == []
    assert [p for p in dirs["processed"].rglob(".*")] == []  # no temporary copy left
    assert tree(dirs["quarantine"]) == ["junk.jpg", "junk.jpg.reason.json"]
    assert len(tree(dirs["processed"])) == n_files - 1
    rows = all_csv_rows(dirs["results"])
    assert len(rows) == n_files and rows["original_path"].is_unique
    assert rows["status"].value_counts().to_dict() == {"filed": 6, "quarantined": 1}
    with sqlite3.connect(dirs["results"] / LEDGER_NAME) as db:
        attempts = [a for (a,) in db.execute("SELECT attempts FROM files")]
        runs = [r for (r,) in db.execute("SELECT run_id FROM runs ORDER BY started_at, rowid")]
    assert attempts == [1] * n_files  # nothing classified was sent again
    assert len(runs) == 2 and set(rows["finished_run"]) <= set(runs)
    # every run folder holds a whole report; a run killed before its reports leaves no folder
    folders = {
        p.name: sorted(q.name for q in p.iterdir())
        for p in dirs["results"].iterdir()
        if p.is_dir() and p.name in runs
    }
    assert all("report.csv" in names and "summary.json" in names for names in folders.values())
    assert set(folders) == ({runs[1]} if point != "after_reports" else set(runs))
    assert [p.name for p in dirs["results"].iterdir() if p.name.startswith(".staging-")] == []
    if point in ("before_reports", "during_reports"):
        # the killed run filed every file; the rerun reports them, naming who filed them
        assert (set(rows["run_id"]), set(rows["finished_run"])) == ({runs[1]}, {runs[0]})
        said = f"run {runs[0]} ended without reports; the {n_files} files it finished go to"
        assert said in rerun.stderr
    # history counts each photo once, in the run that reported it
    assert sum(r.photos for r in history.collect(dirs["results"])) == n_files
