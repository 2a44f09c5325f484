"""Fits a trained model's abstain rule on the calibration split and writes ``abstain_rule.json``.

The calibration split (see :mod:`training.sources`) is read by nothing else in training: early
stopping and model selection use ``validation``. Each calibration photo is scored upright and
turned 90, 180 and 270 degrees, because the rule has to hold for turned photos too.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from contract import LABELS_FILENAME, RULE_FILENAME, read_labels
from training import calibration, dataset
from training.manifest import Entry
from training.sources import OTHER_LABEL

TRAINING_RUN_FILENAME = "training_run.json"
"""The training run's record (:func:`training.train.train`); :func:`calibrate` appends to its
``rule_refits`` so a version's model card says how its rule was produced."""

RECORD_FILENAME = "calibration.json"
"""How the rule was fitted and how it does, beside the model; export copies it into the card."""

CHOICES_FILE = Path(__file__).with_name("choices.json")
"""What was tried for the released recipe and what each choice bought on validation (committed,
measured by hand with the commands it names); copied into ``calibration.json``."""

QUARTER_TURNS = (0, 1, 2, 3)
"""Quarter turns each calibration photo is scored at."""


def model_classes(labels: Sequence[str], entries: Sequence[Entry]) -> list[str]:
    """The Keras model's output columns: the labels, then :data:`OTHER_LABEL` if trained on.

    Args:
        labels: the known labels (``labels.txt``).
        entries: the manifest.

    Returns:
        Column names in column order.
    """
    has_other = any(e.label == OTHER_LABEL and e.split == "train" for e in entries)
    return [*labels, OTHER_LABEL] if has_other else list(labels)


def predict(net, arrays: dataset.SplitArrays, batch_size: int = 32) -> np.ndarray:
    """Softmax rows of ``net`` for decoded images.

    Args:
        net: the Keras classifier (float32 0..255 input).
        arrays: decoded images.
        batch_size: images per forward pass.

    Returns:
        float32 ``(n, C)``.
    """
    out = [
        net.predict_on_batch(arrays.images[i : i + batch_size].astype(np.float32))
        for i in range(0, len(arrays), batch_size)
    ]
    return (
        np.concatenate([np.asarray(o) for o in out]) if out else np.zeros((0, net.output_shape[-1]))
    )


def to_label_ids(y_columns: np.ndarray, other: int | None) -> np.ndarray:
    """Maps model columns to label ids, ``-1`` for the off-category column.

    Args:
        y_columns: int ``(n,)`` true columns of the Keras model's softmax.
        other: the off-category column, or None.

    Returns:
        int ``(n,)``: ``0..K-1`` (columns after ``other`` shifted down by one), ``-1`` for
        off-category rows (the labels :func:`training.calibration.fit_thresholds` takes).
    """
    y = np.asarray(y_columns, dtype=np.int64).copy()
    if other is None:
        return y
    off = y == other
    y[y > other] -= 1
    y[off] = -1
    return y


def apply(document: dict, p_raw: np.ndarray) -> calibration.RuleOutputs:
    """Applies an ``abstain_rule.json`` document to Keras softmax rows, as the signature does.

    Args:
        document: the rule file's dict.
        p_raw: float ``(n, C)`` softmax rows.

    Returns:
        The calibrated outputs.
    """
    return calibration.apply_rule(
        p_raw,
        temperature=document["temperature"],
        other_class_index=document["other_class_index"],
        min_known_probability=document["min_known_probability"],
        min_confidence=document["min_confidence"],
    )


def fit_rule(
    net,
    entries: Sequence[Entry],
    labels: Sequence[str],
    target_precision: float,
    *,
    batch_size: int = 32,
    max_off_category_filed: float | None = None,
) -> dict:
    """Fits the temperature and thresholds of ``net`` on the calibration split.

    Falls back to the validation split when the manifest has no calibration split, and says so
    in ``fitted_on`` (its figures are then met by construction).

    Args:
        net: the trained Keras classifier.
        entries: the manifest.
        labels: the known labels (``labels.txt``).
        target_precision: required share of filed photos that are right (0..1].
        batch_size: images per forward pass.
        max_off_category_filed: most share of the split's off-category photos the rule may file
            (see :func:`training.calibration.fit_thresholds`); None = precision alone.

    Returns:
        The ``abstain_rule.json`` document (``schema_version`` 1).

    Raises:
        ValueError: neither split has photos.
    """
    columns = model_classes(labels, entries)
    other = columns.index(OTHER_LABEL) if OTHER_LABEL in columns else None
    split = "calibration" if any(e.split == "calibration" for e in entries) else "validation"
    size = int(net.input_shape[1])
    rows = [e for e in entries if e.split == split and e.label in columns]
    if not rows:
        raise ValueError(f"no {split} photo to fit the abstain rule on")
    arrays = dataset.turned(dataset.load_split(rows, columns, split, size), QUARTER_TURNS)
    p_raw = predict(net, arrays, batch_size)
    y_columns = arrays.labels.astype(np.int64)
    temperature = calibration.fit_temperature(p_raw, y_columns)
    y = to_label_ids(y_columns, other)
    before = calibration.split_known(p_raw, other)[0]
    probabilities, known = calibration.split_known(
        calibration.temperature_scale(p_raw, temperature), other
    )
    fit = calibration.fit_thresholds(
        probabilities, known, y, target_precision, max_off_category_filed=max_off_category_filed
    )
    inside = y >= 0
    ece = {
        name: calibration.reliability(
            p[inside].max(axis=1), p[inside].argmax(axis=1) == y[inside]
        ).ece
        for name, p in (("before", before), ("after", probabilities))
    }
    return {
        "schema_version": 1,
        "temperature": temperature,
        "other_class_index": other,
        "min_known_probability": fit.min_known_probability,
        "min_confidence": fit.min_confidence,
        "target_precision": target_precision,
        "fitted_on": {
            "split": split,
            "held_out_from_training_and_selection": split == "calibration",
            "images": len(rows),
            "known_label_images": int(sum(e.label != OTHER_LABEL for e in rows)),
            "off_category_images": int(sum(e.label == OTHER_LABEL for e in rows)),
            "quarter_turns_degrees": [90 * k for k in QUARTER_TURNS],
            "scored_rows": len(arrays),
            "nll_before": calibration.negative_log_likelihood(p_raw, y_columns),
            "nll_after": calibration.negative_log_likelihood(p_raw, y_columns, temperature),
            "ece_before": ece["before"],
            "ece_after": ece["after"],
            "max_off_category_filed": max_off_category_filed,
            "target_reached": fit.reached,
            "precision": fit.precision,
            "coverage": fit.coverage,
        },
    }


def write_rule(document: dict, artifacts_dir: Path) -> Path:
    """Writes ``abstain_rule.json`` into the artifacts folder.

    Args:
        document: from :func:`fit_rule`.
        artifacts_dir: the folder.

    Returns:
        The file written.
    """
    path = Path(artifacts_dir) / RULE_FILENAME
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def write_record(document: dict, artifacts_dir: Path, **sections: dict) -> Path:
    """Writes or updates ``calibration.json``: the fit, the recipe's choices, later sections.

    Args:
        document: the rule (from :func:`fit_rule`), or None to keep the recorded one.
        artifacts_dir: the folder.
        **sections: extra top-level sections (e.g. ``test=`` from evaluate), replacing any of
            the same name.

    Returns:
        The file written.
    """
    path = Path(artifacts_dir) / RECORD_FILENAME
    record = json.loads(path.read_text()) if path.exists() else {}
    if document is not None:
        record["rule"] = {k: v for k, v in document.items() if k != "fitted_on"}
        record["fitted_on"] = document.get("fitted_on")
        record["choices"] = json.loads(CHOICES_FILE.read_text()) if CHOICES_FILE.exists() else None
    record.update(sections)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def calibrate(
    artifacts_dir: Path,
    target_precision: float,
    *,
    batch_size: int = 32,
    max_off_category_filed: float | None = None,
    argv: Sequence[str] | None = None,
) -> dict:
    """Refits the abstain rule of ``model.keras`` without training again.

    When ``training_run.json`` is beside the model, the refit is appended to its
    ``rule_refits`` list (``command``, ``at`` UTC ISO 8601, ``target_precision``,
    ``max_off_category_filed``), which export copies into the model card.

    Args:
        artifacts_dir: holds ``model.keras``, ``manifest.csv``, ``labels.txt``.
        target_precision: required share of filed photos that are right (0..1].
        batch_size: images per forward pass.
        max_off_category_filed: see :func:`fit_rule`.
        argv: the command line to record (default: none recorded as ``null``).

    Returns:
        The rule document written to ``abstain_rule.json`` (and into ``calibration.json``).

    Raises:
        FileNotFoundError: no model, manifest or labels.
    """
    import keras

    import training.orientation  # noqa: F401  registers the orientation step for load_model
    from training.manifest import read_manifest

    artifacts_dir = Path(artifacts_dir)
    net = keras.models.load_model(artifacts_dir / "model.keras")
    entries = read_manifest(artifacts_dir / "manifest.csv")
    labels = read_labels(artifacts_dir / LABELS_FILENAME)
    document = fit_rule(
        net,
        entries,
        labels,
        target_precision,
        batch_size=batch_size,
        max_off_category_filed=max_off_category_filed,
    )
    write_rule(document, artifacts_dir)
    write_record(document, artifacts_dir)
    record_refit(artifacts_dir, document, argv)
    return document


def record_refit(artifacts_dir: Path, document: dict, argv: Sequence[str] | None) -> Path | None:
    """Appends a rule refit to ``training_run.json``'s ``rule_refits`` list.

    Args:
        artifacts_dir: the folder holding ``training_run.json``.
        document: the refitted rule (from :func:`fit_rule`).
        argv: the command line, or None.

    Returns:
        The file updated, or None when there is no ``training_run.json``.
    """
    path = Path(artifacts_dir) / TRAINING_RUN_FILENAME
    if not path.exists():
        return None
    run = json.loads(path.read_text())
    run.setdefault("rule_refits", []).append(
        {
            "command": shlex.join(argv) if argv is not None else None,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "target_precision": document["target_precision"],
            "max_off_category_filed": document["fitted_on"]["max_off_category_filed"],
        }
    )
    path.write_text(json.dumps(run, indent=2) + "\n")
    return path
