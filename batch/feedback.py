"""``python -m batch feedback``: photos people moved by hand become labelled examples.

When someone fixes a misfiled photo by moving it (``mv processed/_uncertain/x.jpg
processed/hat/``, renaming it or not), the ledger still says where the job put it. This command
walks ``--processed``, hashes every image that is *not* where the ledger put a file, and matches
it by sha256 with a filed ledger row whose file is gone from its destination. Each match whose
top-level folder differs from the one the job chose is a correction, written to ``feedback.csv``
(atomically) for ``python -m training prepare --extra-labels``.

Folders whose name starts with ``_`` or ``.`` (``_uncertain``) are not labels. Files the job put
somewhere and that are still there are never hashed, so a run costs one hash per moved file.
``moved_at`` is the file's status-change time (``st_ctime``, which a rename updates on Linux and
macOS), so it is the time of the move, not of the photo.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from batch.filing import sha256_file
from batch.reports import atomic_write
from contract import IMAGE_SUFFIXES

FEEDBACK_NAME = "feedback.csv"
LEDGER_NAME = "ledger.sqlite"


@dataclass(frozen=True)
class Correction:
    """One row of ``feedback.csv`` (columns in this order).

    Attributes:
        path: where the photo is now (absolute).
        label: its category folder now: the corrected label.
        previous_folder: the folder the job filed it in (``_uncertain`` or a category).
        predicted: the model's top-1 label for it.
        confidence: the model's top-1 probability.
        run_id: the run that filed it.
        moved_at: when it was moved (ISO 8601 UTC, from ``st_ctime``).
        sha256: its content hash.
    """

    path: str
    label: str
    previous_folder: str
    predicted: str
    confidence: float | None
    run_id: str
    moved_at: str
    sha256: str


COLUMNS = tuple(f.name for f in fields(Correction))


def _label_of(folder: str) -> str:
    """The label a category folder holds (the job's label-to-folder rule, reversed)."""
    try:
        from contract.folders import folder_to_label
    except ImportError:  # before the shared contract package: folders are the labels
        return folder
    try:
        return folder_to_label(folder)
    except ValueError:
        return folder


def _top_folder(path: Path, processed: Path) -> str | None:
    try:
        parts = path.relative_to(processed).parts
    except ValueError:
        return None
    return parts[0] if len(parts) >= 2 else None


def _candidates(processed: Path, known: set[str]):
    """Image files under a label folder that are not at a ledger destination."""
    for folder in sorted(p for p in processed.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")):
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(root) / name
                if (
                    name.startswith(".")
                    or path.suffix.lower() not in IMAGE_SUFFIXES
                    or str(path) in known
                    or not path.is_file()
                    or path.is_symlink()
                ):
                    continue
                yield folder.name, path


def find_corrections(processed: Path, ledger_path: Path) -> list[Correction]:
    """The photos moved by hand between folders of ``processed``.

    Args:
        processed: the job's ``--processed`` folder.
        ledger_path: its ledger (``results/ledger.sqlite``), opened read-only.

    Returns:
        Corrections in path order; empty when there is no ledger or nothing moved.
    """
    processed = Path(os.path.abspath(processed))  # as the job stores destinations
    if not Path(ledger_path).is_file() or not processed.is_dir():
        return []
    db = sqlite3.connect(f"file:{Path(ledger_path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(
            "SELECT destination, sha256, category, confidence, done_run FROM files "
            "WHERE state = 'filed' AND outcome IN ('category', 'uncertain') "
            "AND destination IS NOT NULL ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    known: set[str] = set()
    by_hash: dict[str, list[tuple[str, str, float | None, str]]] = {}
    for destination, sha, category, confidence, run_id in rows:
        dest = os.fsdecode(destination) if isinstance(destination, bytes) else destination
        known.add(dest)
        by_hash.setdefault(sha, []).append((dest, category or "", confidence, run_id or ""))
    found = []
    for label, path in _candidates(processed, known):
        sha = sha256_file(path)
        matches = [m for m in by_hash.get(sha, []) if not os.path.lexists(m[0])]
        if not matches:
            continue  # a new file, or a copy of a photo that is still in place
        dest, predicted, confidence, run_id = matches[0]
        by_hash[sha].remove(matches[0])  # one file, one correction
        previous = _top_folder(Path(dest), processed) or ""
        if previous == label:
            continue  # renamed inside its folder: no new label
        moved = datetime.fromtimestamp(path.stat().st_ctime, UTC)
        found.append(
            Correction(
                str(path),
                _label_of(label),
                previous,
                predicted,
                confidence,
                run_id,
                moved.isoformat(timespec="seconds"),
                sha,
            )
        )
    return found


def write_csv(path: Path, corrections: Sequence[Correction]) -> Path:
    """Writes ``feedback.csv`` (header :data:`COLUMNS`) atomically.

    Args:
        path: output file (folder created if missing).
        corrections: rows.

    Returns:
        The path.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(astuple(c) for c in corrections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue().encode("utf-8", "surrogateescape"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m batch feedback``.

    Args:
        argv: arguments after ``feedback``.

    Returns:
        0 (also when nothing moved: the CSV then has only its header), 2 when there is no
        ledger.
    """
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m batch feedback",
        description="Find photos moved by hand from _uncertain/ or a wrong category folder "
        "into the right category folder (matched through the ledger by content hash, so "
        "renames are fine) and write them to feedback.csv for "
        "`python -m training prepare --extra-labels`.",
    )
    parser.add_argument(
        "--processed",
        type=Path,
        default=Path(env.get("FASHION_BATCH_PROCESSED") or "data/processed_batches"),
        help="the job's processed folder (env FASHION_BATCH_PROCESSED; default %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(env.get("FASHION_BATCH_RESULTS") or "results/batch_results"),
        help="the job's results folder with ledger.sqlite (env FASHION_BATCH_RESULTS; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help=f"CSV to write (default RESULTS/{FEEDBACK_NAME})"
    )
    args = parser.parse_args(argv)
    ledger = args.results / LEDGER_NAME
    if not ledger.is_file():
        print(f"no ledger at {ledger}", file=sys.stderr)
        return 2
    corrections = find_corrections(args.processed, ledger)
    out = write_csv(args.output or args.results / FEEDBACK_NAME, corrections)
    for c in corrections:
        print(f"{c.previous_folder} -> {c.label}: {c.path}", file=sys.stderr)
    print(f"{len(corrections)} corrections in {out}")
    return 0
