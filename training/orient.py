"""Fits the orientation step of a trained upright classifier (see :mod:`training.orientation`).

The head is fitted on the train split's pooled features at all four quarter turns (cached: one
backbone pass per image per turn); its threshold is chosen on the validation split, simulated
on cached features (quarter turns are exact pixel permutations). The calibration and test splits
are not read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from training import dataset, orientation
from training.manifest import Entry


def fit(
    classifier: keras.Model,
    entries: Sequence[Entry],
    columns: Sequence[str],
    seed: int,
    *,
    regions: bool = True,
    batch_size: int = 32,
) -> tuple[keras.Model, dict]:
    """Fits the orientation head and threshold and wraps the classifier with the step.

    Args:
        classifier: the trained upright classifier (layers ``pool`` and ``probabilities``).
        entries: the manifest.
        columns: the classifier's output columns (labels, then ``_other`` if trained on).
        seed: seed of the head's solver.
        regions: the head reads the feature map's 4 quadrants (see
            :class:`training.orientation.OrientationStep`), else the pooled features.
        batch_size: images per forward pass.

    Returns:
        ``(model, record)``: the oriented Keras model (same input and output as
        ``classifier``) and a JSON-ready record of the fit (sizes, threshold table, seconds).

    Raises:
        ValueError: the manifest has no train or no validation photo.
    """
    t0 = time.monotonic()
    size = int(classifier.input_shape[1])
    rows = [e for e in entries if e.label in columns]
    train = dataset.load_split(rows, columns, "train", size)
    val = dataset.load_split(rows, columns, "validation", size)
    if not len(train) or not len(val):
        raise ValueError("the orientation head needs train and validation photos")
    step = orientation.OrientationStep(
        orientation.features_model(classifier, regions), regions=regions
    )
    train_cues = orientation.turned_features(step, train.images, batch_size)[1]
    val_features, val_cues = orientation.turned_features(step, val.images, batch_size)
    kernel, bias = orientation.fit_head(train_cues, seed)
    del train_cues
    head = classifier.get_layer(orientation.HEAD_LAYER).get_weights()
    threshold, table = orientation.choose_threshold(
        val_features, val_cues, val.labels, kernel, bias, (head[0], head[1])
    )
    turn_ids = np.repeat(np.arange(orientation.QUARTER_TURNS), len(val))
    logits = val_cues.reshape(-1, val_cues.shape[-1]) @ kernel + bias
    chosen = next(r for r in table if r["threshold"] == threshold)
    never = orientation.simulate(val_features, val_cues, kernel, bias, (head[0], head[1]), 2.0)
    plain = (never.class_probabilities.argmax(-1) == val.labels[None, :]).mean(axis=1)
    record = {
        "head": "multinomial logistic regression on the frozen features (4 quarter turns)",
        "regions": regions,
        "train_images": len(train),
        "train_rows": 4 * len(train),
        "validation_images": len(val),
        "validation_orientation_accuracy": float((logits.argmax(1) == turn_ids).mean()),
        "threshold": threshold,
        "chosen": chosen,
        "accuracy_by_turn_without_step": [round(float(a), 4) for a in plain],
        "thresholds": table,
        "seconds": round(time.monotonic() - t0, 1),
    }
    return orientation.build_oriented(classifier, kernel, bias, threshold, regions), record


RECORD_FILENAME = "orientation.json"
"""The fit's record, beside the model."""


def attach(
    artifacts_dir: Path,
    seed: int,
    target_precision: float,
    max_off_category_filed: float | None = None,
) -> dict:
    """Adds the orientation step to the upright ``model.keras`` of a finished training run.

    Does what ``train --orientation-head`` does after its training: keeps the upright model as
    ``classifier.keras``, writes the oriented one as ``model.keras``, refits the abstain rule on
    it (calibration split, four turns), and records the fit in ``orientation.json`` and
    ``training_run.json``.

    Args:
        artifacts_dir: a training run's folder (``model.keras``, ``manifest.csv``, ``labels.txt``).
        seed: seed of the head's solver.
        target_precision: precision the refitted rule must reach (0..1].
        max_off_category_filed: see :func:`training.rule.fit_rule`.

    Returns:
        The orientation record.

    Raises:
        FileNotFoundError: no model, manifest or labels.
        ValueError: ``model.keras`` already has an orientation step.
    """
    from contract import LABELS_FILENAME, read_labels
    from training import rule
    from training.manifest import read_manifest
    from training.train import CLASSIFIER_FILENAME

    artifacts_dir = Path(artifacts_dir)
    net = keras.models.load_model(artifacts_dir / "model.keras")
    if any(isinstance(layer, orientation.OrientationStep) for layer in net.layers):
        raise ValueError(f"{artifacts_dir / 'model.keras'} already has an orientation step")
    keras.utils.set_random_seed(seed)
    entries = read_manifest(artifacts_dir / "manifest.csv")
    labels = read_labels(artifacts_dir / LABELS_FILENAME)
    columns = rule.model_classes(labels, entries)
    net.save(artifacts_dir / CLASSIFIER_FILENAME)
    oriented, record = fit(net, entries, columns, seed)
    oriented.save(artifacts_dir / "model.keras")
    fitted = rule.fit_rule(
        oriented,
        entries,
        labels,
        target_precision,
        max_off_category_filed=max_off_category_filed,
    )
    rule.write_rule(fitted, artifacts_dir)
    rule.write_record(fitted, artifacts_dir)
    (artifacts_dir / RECORD_FILENAME).write_text(json.dumps(record, indent=2) + "\n")
    run_path = artifacts_dir / "training_run.json"
    if run_path.exists():
        run = json.loads(run_path.read_text())
        run["orientation"] = record
        run["abstain_rule"] = fitted
        run_path.write_text(json.dumps(run, indent=2) + "\n")
    return record
