"""``prepare``: scan a folder-per-class image set, split it, and write the manifest.

Two layouts are accepted:
- ``<data>/{train,validation,test}/<class>/*`` (fixed splits, e.g. clothing-dataset-small);
- ``<data>/<class>/*`` (no splits): each class is shuffled with a fixed seed and split
  70/15/15 (stratified), see :class:`training.settings.SplitConfig`.

Every file is decoded once with the shared :func:`preprocessing.decode`; files it rejects are
listed in the report with their error ``code`` and left out of the manifest (and out of the
random split, which is made over the files that decode).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import preprocessing
from contract import LABELS_FILENAME, write_labels
from training import sources
from training.settings import SPLITS, SplitConfig

MANIFEST_FIELDS = ("path", "label", "split")
"""Columns of ``manifest.csv``, in order."""

CHECK_SIZE = (32, 32)
"""Decode size used to validate a file: small, so JPEG draft mode keeps the check cheap."""


@dataclass(frozen=True)
class Entry:
    """One manifest row.

    Attributes:
        path: absolute path of the image file.
        label: class name (the folder name).
        split: one of ``train``, ``validation``, ``test``.
    """

    path: str
    label: str
    split: str


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_fixed_splits(data_dir: Path) -> bool:
    """Tells whether ``data_dir`` holds ``train/``, ``validation/`` and ``test/`` folders.

    Args:
        data_dir: the data set root.

    Returns:
        True when all three split folders exist.
    """
    return all((data_dir / split).is_dir() for split in SPLITS)


def split_counts(n: int, config: SplitConfig) -> tuple[int, int, int]:
    """Sizes of the train/validation/test parts of one class of ``n`` images.

    Rounded to the nearest integer; when ``n >= 3`` validation and test get at least one image.

    Args:
        n: images in the class.
        config: the fractions.

    Returns:
        ``(n_train, n_validation, n_test)``, summing to ``n``.
    """
    n_val = round(n * config.validation)
    n_test = n - round(n * config.train) - n_val
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_test = max(n_test, 0)
    return n - n_val - n_test, n_val, n_test


def scan(data_dir: Path) -> list[Entry]:
    """Lists every candidate file with its class, and its split when the layout fixes it.

    Nothing is decoded here. In a set without split folders every entry's ``split`` is ``""``
    (see :func:`assign_splits`).

    Args:
        data_dir: the data set root, in one of the two layouts of this module.

    Returns:
        Entries sorted by path.

    Raises:
        FileNotFoundError: ``data_dir`` does not exist or holds no class folder with files.
    """
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    data_dir = data_dir.resolve()
    entries: list[Entry] = []
    if has_fixed_splits(data_dir):
        for split in SPLITS:
            for class_dir in _class_dirs(data_dir / split):
                entries += [Entry(str(p), class_dir.name, split) for p in _files(class_dir)]
    else:
        for class_dir in _class_dirs(data_dir):
            entries += [Entry(str(p), class_dir.name, "") for p in _files(class_dir)]
    if not entries:
        raise FileNotFoundError(f"no class folder with files under {data_dir}")
    return sorted(entries, key=lambda e: e.path)


def assign_splits(entries: list[Entry], config: SplitConfig) -> list[Entry]:
    """Splits each class with a seeded shuffle (stratified); keeps splits already set.

    Args:
        entries: rows from :func:`scan`; those with ``split == ""`` get one.
        config: fractions and seed.

    Returns:
        All entries with a split, sorted by split (train, validation, test), label, path.
    """
    rng = random.Random(config.seed)
    done = [e for e in entries if e.split]
    for label in sorted({e.label for e in entries if not e.split}):
        files = sorted(e.path for e in entries if e.label == label and not e.split)
        rng.shuffle(files)
        n_train, n_val, _ = split_counts(len(files), config)
        for i, path in enumerate(files):
            split = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
            done.append(Entry(path, label, split))
    order = {split: i for i, split in enumerate(SPLITS)}
    return sorted(done, key=lambda e: (order[e.split], e.label, e.path))


def check_entry(entry: Entry) -> tuple[Entry, str | None, str]:
    """Decodes one entry's file once, small, to see whether training can use it.

    Args:
        entry: the row to check.

    Returns:
        ``(entry, error, sha256)``: ``error`` is ``None`` or ``"<code>: <message>"`` with a
        :class:`preprocessing.ImageError` code; ``sha256`` is the hex digest of the file's bytes.

    Raises:
        OSError: the file cannot be read.
    """
    data = Path(entry.path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        preprocessing.decode(data, CHECK_SIZE)
    except preprocessing.ImageError as exc:
        return entry, f"{exc.code}: {exc}", digest
    return entry, None, digest


def prepare(
    data_dir: Path,
    artifacts_dir: Path,
    config: SplitConfig | None = None,
    *,
    extra_dir: Path | None = None,
    offclass_dir: Path | None = None,
    sources_config: sources.SourcesConfig | None = None,
) -> dict:
    """Writes ``manifest.csv``, ``labels.txt`` and ``prepare_report.json`` into ``artifacts_dir``.

    With ``sources_config.calibration > 0`` part of ``validation`` becomes ``calibration``;
    ``extra_dir`` adds more in-class photos and ``offclass_dir`` off-category photos (label
    :data:`training.sources.OTHER_LABEL`, never in ``labels.txt``), split as
    :mod:`training.sources` says.

    Args:
        data_dir: the data set root (either layout).
        artifacts_dir: output folder, created if needed.
        config: split fractions and seed for a set without split folders.
        extra_dir: folder-per-class photos of the same labels, or None.
        offclass_dir: folder-per-original-label photos of none of the labels, or None.
        sources_config: how calibration, extra and off-category photos are split.

    Returns:
        The report written to ``prepare_report.json``: ``data_dir``, ``layout``
        (``"fixed_splits"`` or ``"random_split"``), ``split_config``, ``labels``, ``counts``
        (split -> label -> images kept), ``totals`` (split -> images kept), ``rejected`` (list of
        ``{"path", "label", "split", "error"}``) and ``duplicate_groups`` (files with identical
        bytes, list of path lists).

    Raises:
        FileNotFoundError: no data.
        ValueError: every file was rejected.
    """
    config = config or SplitConfig()
    plan = sources_config or sources.SourcesConfig()
    data_dir = Path(data_dir)
    candidates = scan(data_dir)
    labels_seen = {e.label for e in candidates}
    extra_rows: list[tuple[str, str, str]] = []
    if extra_dir is not None:
        listing = sources.folder_listing(extra_dir)
        unknown = sorted(set(listing) - labels_seen)
        if unknown:
            raise ValueError(f"{extra_dir}: folders {unknown} are not labels of {data_dir}")
        extra_rows += sources.plan_extra(listing, plan)
    if offclass_dir is not None:
        extra_rows += sources.plan_offclass(sources.folder_listing(offclass_dir), plan)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(check_entry, candidates + [Entry(*row) for row in extra_rows]))
    good = [entry for entry, error, _ in results if error is None]
    planned = {e.path for e in good if e.path in {row[0] for row in extra_rows}}
    base = assign_splits([e for e in good if e.path not in planned], config)
    base = [
        Entry(*row)
        for row in sources.carve_calibration([(e.path, e.label, e.split) for e in base], plan)
    ]
    kept = base + [e for e in good if e.path in planned]
    if not kept:
        raise ValueError(f"no decodable image under {data_dir}")
    rejected = [
        {"path": e.path, "label": e.label, "split": e.split or None, "error": error}
        for e, error, _ in results
        if error is not None
    ]
    by_digest: dict[str, list[str]] = {}
    for entry, error, digest in results:
        if error is None:
            by_digest.setdefault(digest, []).append(entry.path)
    labels = sorted({e.label for e in kept} - {sources.OTHER_LABEL})
    counts = {
        split: dict(sorted(Counter(e.label for e in kept if e.split == split).items()))
        for split in sources.ALL_SPLITS
        if split in SPLITS or any(e.split == split for e in kept)
    }
    report = {
        "data_dir": str(data_dir.resolve()),
        "layout": "fixed_splits" if has_fixed_splits(data_dir) else "random_split",
        "split_config": {
            "train": config.train,
            "validation": config.validation,
            "test": round(1 - config.train - config.validation, 6),
            "seed": config.seed,
        },
        "sources": {
            "extra_dir": str(Path(extra_dir).resolve()) if extra_dir is not None else None,
            "offclass_dir": str(Path(offclass_dir).resolve()) if offclass_dir is not None else None,
            "config": asdict(plan),
            "offclass_origin": _origins(kept),
        },
        "labels": labels,
        "counts": counts,
        "totals": {split: sum(c.values()) for split, c in counts.items()},
        "rejected": rejected,
        "duplicate_groups": [paths for paths in by_digest.values() if len(paths) > 1],
    }
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(artifacts_dir / "manifest.csv", kept)
    write_labels(labels, artifacts_dir / LABELS_FILENAME)
    (artifacts_dir / "prepare_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _origins(entries: list[Entry]) -> dict[str, dict[str, int]]:
    """Off-category photos per split and original folder name."""
    out: dict[str, Counter] = {}
    for e in entries:
        if e.label == sources.OTHER_LABEL:
            out.setdefault(e.split, Counter())[Path(e.path).parent.name] += 1
    return {split: dict(sorted(c.items())) for split, c in sorted(out.items())}


def write_manifest(path: Path, entries: list[Entry]) -> None:
    """Writes entries as CSV with the header ``path,label,split``.

    Args:
        path: output file.
        entries: rows to write, in order.
    """
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_FIELDS)
        writer.writerows((e.path, e.label, e.split) for e in entries)


def read_manifest(path: Path) -> list[Entry]:
    """Reads a ``manifest.csv`` written by :func:`write_manifest`.

    Args:
        path: the CSV file.

    Returns:
        The entries, in file order.

    Raises:
        FileNotFoundError: no manifest (run ``python -m training prepare`` first).
        ValueError: the header is not ``path,label,split``.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ValueError(f"{path}: header must be {','.join(MANIFEST_FIELDS)}")
        return [Entry(row["path"], row["label"], row["split"]) for row in reader]
