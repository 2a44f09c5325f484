"""``prepare --extra-labels feedback.csv``: corrections from the nightly job become training data.

``feedback.csv`` is written by ``python -m batch feedback`` (columns ``path,label,...``; only
``path`` and ``label`` are read here, extra columns are ignored). Each listed photo is added to
the **train** split only, so validation and test figures stay comparable between versions. A
photo is dropped, with its reason in ``prepare_report.json`` under ``extra_labels.dropped``, when:

- ``in_<split>`` (``in_validation``, ``in_calibration``, ``in_test`` ...): its content (sha256)
  is already in a split that is not ``train`` (it would leak a held-out photo into training);
- ``unknown_label``: its label is not one of the data set's classes;
- ``missing`` or an image error code (``corrupt_image`` ...): it cannot be read or decoded;
- ``duplicate``: the same content is listed twice in the file.

It runs after the layout's own prepare (:func:`apply` reads and rewrites ``manifest.csv`` and
``prepare_report.json``), so it works the same for folder, ``styles.csv`` and ``path,label`` sets.
The count of added photos travels to ``training_run.json`` (``dataset.extra_labels``, see
:func:`training_record`) and from there into the exported model card.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import preprocessing
from contract import LABELS_FILENAME, read_labels
from training.manifest import CHECK_SIZE, Entry, read_manifest, write_manifest
from training.settings import SPLITS

REQUIRED_COLUMNS = ("path", "label")


def read_feedback(path: Path) -> list[tuple[str, str]]:
    """Reads ``(path, label)`` pairs from a feedback CSV.

    Args:
        path: the CSV, with at least the columns ``path`` and ``label``.

    Returns:
        The pairs in file order; relative paths are taken relative to the CSV's folder.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a required column is missing.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        pairs = []
        for row in reader:
            p = Path(row["path"])
            pairs.append((str(p if p.is_absolute() else (path.parent / p).resolve()), row["label"]))
    return pairs


def _digest_and_error(path: str) -> tuple[str | None, str | None]:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None, "missing"
    digest = hashlib.sha256(data).hexdigest()
    try:
        preprocessing.decode(data, CHECK_SIZE)
    except preprocessing.ImageError as exc:
        return digest, exc.code
    return digest, None


def merge(
    pairs: Iterable[tuple[str, str]],
    labels: Iterable[str],
    held_out: dict[str, str],
    source: str,
) -> tuple[list[Entry], dict[str, Any]]:
    """Turns feedback pairs into train entries, dropping what must not be trained on.

    Args:
        pairs: ``(path, label)`` from :func:`read_feedback`.
        labels: the data set's classes.
        held_out: sha256 -> split (``validation`` or ``test``) of every held-out photo.
        source: the feedback file, for the report.

    Returns:
        ``(entries, report)``: the new ``train`` entries and ``{"source", "rows", "added",
        "dropped": [{"path", "label", "reason"}]}``.
    """
    known = set(labels)
    seen: set[str] = set()
    added: list[Entry] = []
    dropped: list[dict[str, str]] = []
    rows = 0
    for path, label in pairs:
        rows += 1
        digest, error = _digest_and_error(path)
        reason = error
        if reason is None and label not in known:
            reason = "unknown_label"
        if reason is None and digest in held_out:
            reason = f"in_{held_out[digest]}"
        if reason is None and digest in seen:
            reason = "duplicate"
        if reason is not None:
            dropped.append({"path": path, "label": label, "reason": reason})
            continue
        seen.add(str(digest))
        added.append(Entry(path, label, "train"))
    report = {"source": source, "rows": rows, "added": len(added), "dropped": dropped}
    return added, report


def _sha256(path: str) -> tuple[str, str | None]:
    try:
        return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return path, None


def apply(artifacts_dir: Path, feedback_csv: Path) -> dict[str, Any]:
    """Adds a feedback file's photos to a prepared manifest's train split.

    Reads ``manifest.csv``, ``labels.txt`` and ``prepare_report.json`` from ``artifacts_dir``
    (written by ``prepare``), hashes every photo outside the train split (validation,
    calibration, test, ...), inserts the accepted feedback photos as ``train`` rows after the
    last train row (the rest of the manifest keeps its order) and rewrites the manifest and the
    report (``counts``, ``totals`` and a new ``extra_labels`` entry, see :func:`merge`).

    Args:
        artifacts_dir: the prepared artifacts folder.
        feedback_csv: ``feedback.csv`` from ``python -m batch feedback``.

    Returns:
        The updated report.

    Raises:
        FileNotFoundError: no prepared manifest, or no feedback file.
        ValueError: the feedback file lacks the ``path`` or ``label`` column.
    """
    artifacts_dir = Path(artifacts_dir)
    entries = read_manifest(artifacts_dir / "manifest.csv")
    labels = read_labels(artifacts_dir / LABELS_FILENAME)
    report_path = artifacts_dir / "prepare_report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    pairs = read_feedback(feedback_csv)
    split_of = {e.path: e.split for e in entries if e.split != "train"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        held_out = {d: split_of[p] for p, d in pool.map(_sha256, split_of) if d is not None}
    added, extra = merge(pairs, labels, held_out, str(feedback_csv))
    last_train = max((i for i, e in enumerate(entries) if e.split == "train"), default=-1)
    added = sorted(added, key=lambda e: (e.label, e.path))
    entries = entries[: last_train + 1] + added + entries[last_train + 1 :]
    write_manifest(artifacts_dir / "manifest.csv", entries)
    splits = list(
        dict.fromkeys([*SPLITS, *(report.get("counts") or {}), *(e.split for e in entries)])
    )
    report["counts"] = {
        split: dict(sorted(Counter(e.label for e in entries if e.split == split).items()))
        for split in splits
    }
    report["totals"] = {split: sum(c.values()) for split, c in report["counts"].items()}
    report["extra_labels"] = extra
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def training_record(prepare_report: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``training_run.json`` (and so the model card) keeps about the extra labels.

    Args:
        prepare_report: parsed ``prepare_report.json``, or None.

    Returns:
        ``{"added": n, "dropped": m, "source": path}``, or None when prepare had no
        ``--extra-labels``.
    """
    extra = (prepare_report or {}).get("extra_labels")
    if not isinstance(extra, dict):
        return None
    return {
        "added": int(extra.get("added", 0)),
        "dropped": len(extra.get("dropped") or []),
        "source": extra.get("source"),
    }
