"""Extra sources of ``prepare``: more in-class photos, off-category photos, a calibration split.

Version 2's abstain rule has to be fitted on photos that neither training nor model selection
saw, and its off-category figure has to be measured on photos of kinds the model was never
shown. This module plans those splits; :mod:`training.manifest` writes them.

Split names beyond ``train``/``validation``/``test`` (all seeded, stratified per folder):

- ``calibration``: a part of ``validation`` (and of the extra in-class photos, and of the
  off-category photos) that early stopping and model selection never read; the abstain rule
  (temperature and thresholds) is fitted on it alone.
- ``offclass_random``: a random part of each off-category label, kept out of everything but the
  final evaluation.
- ``offclass_labels``: every photo of the whole off-category labels kept out (e.g. ``Blazer``,
  ``Undershirt``): kinds of clothing the model and the rule never saw.

Off-category photos carry the label :data:`OTHER_LABEL` in the manifest; their original folder
name stays readable from the path (its parent folder).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OTHER_LABEL = "_other"
"""Manifest label of an off-category photo ("none of the known labels"); never in labels.txt."""

EXTRA_SPLITS = ("calibration", "offclass_random", "offclass_labels")
"""Split names this module adds to :data:`training.settings.SPLITS`."""

ALL_SPLITS = ("train", "validation", "calibration", "test", "offclass_random", "offclass_labels")
"""Every split a manifest may hold, in report order."""


@dataclass(frozen=True)
class SourcesConfig:
    """How the extra sources are split.

    Attributes:
        calibration: fraction of each class of ``validation`` (and of the extra in-class
            photos, after ``extra_train``) moved to ``calibration`` (0..1; 0 = no calibration
            split, the rule is then fitted on validation and says so).
        extra_train: fraction of each class of the extra in-class photos put in ``train``; the
            rest is split between ``calibration`` and ``validation`` like the validation split.
        offclass_keep_out_labels: off-category folder names kept out whole (``offclass_labels``).
        offclass_exclude: off-category folder names ignored entirely (mixed folders such as
            ``Not_sure``, which holds photos of the known classes too).
        offclass_random: fraction of each remaining off-category folder kept out
            (``offclass_random``).
        offclass_calibration: fraction of each remaining off-category folder in ``calibration``.
        offclass_validation: fraction of each remaining off-category folder in ``validation``;
            the rest is ``train``.
        seed: seed of every shuffle here.
    """

    calibration: float = 0.0
    extra_train: float = 0.5
    offclass_keep_out_labels: tuple[str, ...] = ()
    offclass_exclude: tuple[str, ...] = ("Not_sure",)
    offclass_random: float = 0.25
    offclass_calibration: float = 0.15
    offclass_validation: float = 0.10
    seed: int = 42


def _cut(files: list[str], fractions: Sequence[tuple[str, float]], rest: str) -> dict[str, str]:
    """Assigns shuffled files to named parts by fractions (rounded), the remainder to ``rest``."""
    out: dict[str, str] = {}
    start = 0
    for name, fraction in fractions:
        n = round(len(files) * fraction)
        for path in files[start : start + n]:
            out[path] = name
        start += n
    for path in files[start:]:
        out[path] = rest
    return out


def _shuffled(paths: list[str], rng: random.Random) -> list[str]:
    files = sorted(paths)
    rng.shuffle(files)
    return files


def carve_calibration(
    rows: list[tuple[str, str, str]], config: SourcesConfig
) -> list[tuple[str, str, str]]:
    """Moves a seeded, stratified part of each validation class to ``calibration``.

    Args:
        rows: ``(path, label, split)`` triples.
        config: ``calibration`` fraction and seed.

    Returns:
        The rows, with ``round(n_c * calibration)`` validation rows of each class ``c`` now in
        ``calibration``.
    """
    if config.calibration <= 0:
        return rows
    rng = random.Random(config.seed)
    moved: dict[str, str] = {}
    for label in sorted({lab for _, lab, split in rows if split == "validation"}):
        files = _shuffled([p for p, lab, s in rows if s == "validation" and lab == label], rng)
        moved.update(_cut(files, [("calibration", config.calibration)], "validation"))
    return [(p, lab, moved.get(p, s) if s == "validation" else s) for p, lab, s in rows]


def plan_extra(paths_by_label: dict[str, list[str]], config: SourcesConfig) -> list[tuple]:
    """Splits the extra in-class photos: ``extra_train`` to train, the rest like validation.

    Args:
        paths_by_label: class name -> image paths.
        config: fractions and seed.

    Returns:
        ``(path, label, split)`` triples; the non-train part goes to ``calibration`` in the
        proportion ``calibration`` and to ``validation`` otherwise.
    """
    rng = random.Random(config.seed + 1)
    rest_cal = config.calibration
    out = []
    for label in sorted(paths_by_label):
        files = _shuffled(paths_by_label[label], rng)
        n_train = round(len(files) * config.extra_train)
        parts = {p: "train" for p in files[:n_train]}
        parts.update(_cut(files[n_train:], [("calibration", rest_cal)], "validation"))
        out += [(p, label, parts[p]) for p in files]
    return out


def plan_offclass(paths_by_label: dict[str, list[str]], config: SourcesConfig) -> list[tuple]:
    """Splits the off-category photos (label :data:`OTHER_LABEL`).

    Args:
        paths_by_label: original folder name -> image paths.
        config: kept-out labels, excluded labels, fractions, seed.

    Returns:
        ``(path, OTHER_LABEL, split)`` triples; excluded folders are left out.
    """
    rng = random.Random(config.seed + 2)
    out = []
    for label in sorted(paths_by_label):
        if label in config.offclass_exclude:
            continue
        files = _shuffled(paths_by_label[label], rng)
        if label in config.offclass_keep_out_labels:
            parts = {p: "offclass_labels" for p in files}
        else:
            parts = _cut(
                files,
                [
                    ("offclass_random", config.offclass_random),
                    ("calibration", config.offclass_calibration),
                    ("validation", config.offclass_validation),
                ],
                "train",
            )
        out += [(p, OTHER_LABEL, parts[p]) for p in files]
    return out


def folder_listing(root: Path) -> dict[str, list[str]]:
    """Lists ``<root>/<label>/<file>`` (hidden files and non-folders skipped).

    Args:
        root: a folder-per-label image set.

    Returns:
        label -> absolute file paths, sorted.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    root = root.resolve()
    return {
        d.name: sorted(str(p) for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
