"""The two whole-run clients: the product's nightly job and the seed-style batch client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def nightly(gateway_url: str, photos: list[Path], workdir: Path) -> dict:
    """The nightly job (``python -m batch run``) over copies of ``photos`` through a gateway.

    Args:
        gateway_url: the gateway's base URL.
        photos: real photos, copied to ``workdir/incoming/<class>/`` (dated an hour back so the job
            does not take them for files still being written).
        workdir: a fresh folder for the job's folders.

    Returns:
        ``{"images", "job_seconds", "images_per_s", "process_wall_seconds", "exit_code"}``.

    Raises:
        RuntimeError: the job exited with another code than 0 or 1.
    """
    incoming = workdir / "incoming"
    for photo in photos:
        target = incoming / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    past = time.time() - 3600  # not "still being written"
    for path in incoming.rglob("*.jpg"):
        os.utime(path, (past, past))
    args = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--gateway",
        gateway_url,
        "--incoming",
        str(incoming),
        "--processed",
        str(workdir / "processed"),
        "--quarantine",
        str(workdir / "quarantine"),
        "--results",
        str(workdir / "results"),
        "--logs",
        str(workdir / "logs"),
    ]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise RuntimeError(f"nightly job failed ({result.returncode}): {result.stderr[-2000:]}")
    summary = json.loads(next((workdir / "results").glob("*/summary.json")).read_text())
    return {
        "images": summary["files"],
        "job_seconds": summary["duration_seconds"],
        "images_per_s": summary["images_per_second"],
        "process_wall_seconds": round(wall, 2),
        "exit_code": result.returncode,
    }


def seed_client(url: str, files: list[tuple[str, bytes]]) -> dict:
    """The original system's batch client: one ``POST /predict`` per photo, in order.

    Args:
        url: base URL of the side under test.
        files: ``(filename, jpeg bytes)`` pairs.

    Returns:
        ``{"images", "seconds", "images_per_s", "errors"}``.
    """
    session = requests.Session()
    errors = 0
    start = time.perf_counter()
    for name, data in files:
        response = session.post(
            f"{url}/predict", files={"image": (name, data, "image/jpeg")}, timeout=60
        )
        errors += response.status_code != 200
    seconds = time.perf_counter() - start
    return {
        "images": len(files),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(files) / seconds, 1),
        "errors": errors,
    }
