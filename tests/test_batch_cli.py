"""The job's command line as a scheduler sees it: exit codes, one-line messages, nothing touched.

Each test runs ``python -m batch`` in a subprocess with a gateway URL nobody listens on: every case
here must stop before the job needs the gateway.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from filelock import FileLock

pytestmark = pytest.mark.integration

NOBODY = "http://127.0.0.1:9"


def _job(dirs, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "batch", *args]
    if args and args[0] == "run":
        for name in ("incoming", "processed", "quarantine", "results", "logs"):
            command += [f"--{name}", str(dirs[name])]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_BATCH_")}
    return subprocess.run(
        command,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _untouched(dirs) -> None:
    assert sorted(p.name for p in dirs["incoming"].iterdir()) == ["a.jpg"]
    for name in ("processed", "quarantine", "results"):
        assert not dirs[name].exists(), name


@pytest.fixture
def photo_dirs(dirs):
    (dirs["incoming"] / "a.jpg").write_bytes(b"\xff\xd8 not really a photo")
    return dirs


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        (
            {"FASHION_BATCH_DRY_RUN": "ture"},
            [],
            "FASHION_BATCH_DRY_RUN='ture' is not a boolean (use 1/0, true/false, yes/no or on/off)",
        ),
        (
            {"FASHION_BATCH_CHUNK_SIZE": "16.5"},
            [],
            "FASHION_BATCH_CHUNK_SIZE='16.5' is not a valid int",
        ),
        ({}, ["--concurrency", "two"], "argument --concurrency: invalid int value: 'two'"),
        ({}, ["--min-confidence", "nan"], "--min-confidence must be a finite number, got nan"),
        ({}, ["--retries", "-1"], "--retries must be >= 0"),
    ],
)
def test_a_setting_that_does_not_parse_stops_the_job_with_78_before_any_file(
    photo_dirs, env, args, message
):
    proc = _job(photo_dirs, "run", "--gateway", NOBODY, *args, env=env)
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(message), proc.stderr
    _untouched(photo_dirs)


def test_results_path_that_is_a_file_is_named(photo_dirs):
    photo_dirs["results"].write_text("not a folder")
    proc = _job(photo_dirs, "run", "--gateway", NOBODY)
    assert proc.returncode == 78
    assert f"--results ({photo_dirs['results']}) is a file, not a folder" in proc.stderr
    assert sorted(p.name for p in photo_dirs["incoming"].iterdir()) == ["a.jpg"]


def test_an_overlapping_run_exits_75_retry_later(photo_dirs):
    photo_dirs["results"].mkdir()
    lock = photo_dirs["results"] / ".batch.lock"
    with FileLock(lock, timeout=0):  # the first run, as the OS sees it
        proc = _job(photo_dirs, "run", "--gateway", NOBODY)
    assert proc.returncode == 75, proc.stderr
    assert f"another batch run holds {lock}; retry later" in proc.stderr
    assert sorted(p.name for p in photo_dirs["incoming"].iterdir()) == ["a.jpg"]
    assert not photo_dirs["processed"].exists()


def test_help_and_version():
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "75  retry later (EX_TEMPFAIL)" in proc.stdout
    assert "78  fix the configuration (EX_CONFIG)" in proc.stdout
    version = subprocess.run(
        [sys.executable, "-m", "batch", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert version.stdout.startswith("fashion-batch 0.1.0 (commit ")
