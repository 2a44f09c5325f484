"""``prepare`` for the labelled-CSV layouts of :mod:`training.layouts`.

Steps: read the table (rows without an image, malformed rows, ... are skipped with a reason),
choose the classes (``--classes``, ``--top-classes N`` counted over rows with an image, or all),
decode every chosen row's image once with :func:`preprocessing.decode` (a file that does not
decode is skipped with its error code), split each class 70/15/15 with a seeded shuffle
(:func:`training.manifest.assign_splits`), and write ``manifest.csv``, ``labels.txt`` and
``prepare_report.json`` in the same format as for folder layouts, so ``train``, ``evaluate``
and ``export`` work unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from contract import LABELS_FILENAME, write_labels
from training import layouts, manifest, sources
from training.settings import SPLITS, SplitConfig


def prepare_table(
    table: layouts.TableRows,
    artifacts_dir: Path,
    config: SplitConfig | None = None,
    *,
    top: int | None = None,
    classes: list[str] | None = None,
    calibration: float = 0.0,
) -> dict:
    """Writes the manifest, labels and report of a CSV layout into ``artifacts_dir``.

    Args:
        table: from :func:`training.layouts.read_kaggle` or
            :func:`training.layouts.read_labels_csv`.
        artifacts_dir: output folder, created if needed.
        config: split fractions and seed.
        top: keep the ``top`` most frequent labels among rows with an image.
        classes: keep exactly these labels (exclusive with ``top``); neither = all labels.
        calibration: fraction of each class's validation images moved to a ``calibration``
            split that only the abstain rule's fit reads (:func:`training.sources.
            carve_calibration`, seeded with ``config.seed``); 0 = none.

    Returns:
        The report written to ``prepare_report.json``: the keys of
        :func:`training.manifest.prepare` (``data_dir``, ``layout``, ``split_config``,
        ``labels``, ``counts``, ``totals``, ``rejected``, ``duplicate_groups``) plus
        ``source`` (the CSV), ``label_column``, ``class_choice`` (``{"rule": "top", "n": N}``,
        ``{"rule": "list"}`` or ``{"rule": "all"}``), ``classes`` (per chosen label:
        ``rows`` with an image, ``kept`` after decoding), ``other_labels`` (rows with an image
        whose label was not chosen, per label), ``rows`` (read, usable, skipped, repaired,
        not_chosen, kept), ``skipped_rows`` (every skipped row: ``line``, ``id``, ``reason``,
        ``detail``; decoding failures included), ``repaired_rows`` and ``images_without_row``
        (``count``, ``examples``).

    Raises:
        ValueError: see :func:`training.layouts.choose_classes`; or no chosen image decodes.
    """
    config = config or SplitConfig()
    counts = table.label_counts()
    chosen = layouts.choose_classes(counts, top=top, classes=classes)
    wanted = set(chosen)
    picked = [row for row in table.rows if row.label in wanted]
    by_path = {row.path: row for row in picked}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(manifest.check_entry, (manifest.Entry(r.path, r.label, "") for r in picked))
        )
    kept = manifest.assign_splits([e for e, error, _ in results if error is None], config)
    plan = sources.SourcesConfig(calibration=calibration, seed=config.seed)
    kept = [
        manifest.Entry(*row)
        for row in sources.carve_calibration([(e.path, e.label, e.split) for e in kept], plan)
    ]
    if not kept:
        raise ValueError(f"no image of the chosen classes decodes ({table.source})")
    undecodable = [
        layouts.Skipped(by_path[e.path].line, by_path[e.path].key, *error.split(": ", 1))
        for e, error, _ in results
        if error is not None
    ]
    skipped = sorted([*table.skipped, *undecodable], key=lambda s: s.line)
    kept_counts = Counter(e.label for e in kept)
    by_digest: dict[str, list[str]] = {}
    for entry, error, digest in results:
        if error is None:
            by_digest.setdefault(digest, []).append(entry.path)
    splits = [s for s in sources.ALL_SPLITS if s in SPLITS or any(e.split == s for e in kept)]
    split_counts = {
        split: dict(sorted(Counter(e.label for e in kept if e.split == split).items()))
        for split in splits
    }
    report = {
        "data_dir": str(Path(table.source).parent),
        "layout": table.layout,
        "source": table.source,
        "label_column": table.label_column,
        "split_config": {
            "train": config.train,
            "validation": config.validation,
            "test": round(1 - config.train - config.validation, 6),
            "calibration_of_validation": calibration,
            "seed": config.seed,
        },
        "class_choice": (
            {"rule": "list"}
            if classes is not None
            else {"rule": "top", "n": top}
            if top is not None
            else {"rule": "all"}
        ),
        "labels": chosen,
        "classes": [
            {"label": label, "rows": counts[label], "kept": kept_counts[label]} for label in chosen
        ],
        "other_labels": {
            label: n
            for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if label not in wanted
        },
        "counts": split_counts,
        "totals": {split: sum(c.values()) for split, c in split_counts.items()},
        "rows": {
            "read": len(table.rows) + len(table.skipped),
            "usable": len(table.rows),
            "skipped": len(skipped),
            "repaired": len(table.repaired),
            "not_chosen": len(table.rows) - len(picked),
            "kept": len(kept),
        },
        "skipped_rows": [
            {"line": s.line, "id": s.key, "reason": s.reason, "detail": s.detail} for s in skipped
        ],
        "repaired_rows": table.repaired,
        "images_without_row": {
            "count": table.images_without_row,
            "examples": table.images_without_row_examples,
        },
        "rejected": [
            {"path": e.path, "label": e.label, "split": None, "error": error}
            for e, error, _ in results
            if error is not None
        ],
        "duplicate_groups": [paths for paths in by_digest.values() if len(paths) > 1],
    }
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_manifest(artifacts_dir / "manifest.csv", kept)
    write_labels(chosen, artifacts_dir / LABELS_FILENAME)
    (artifacts_dir / "prepare_report.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report
