"""``evaluate``: test-split metrics of the trained model, written as JSON plus two plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from training import dataset, plots
from training.manifest import read_labels, read_manifest

SUMMARY_KEYS = ("precision", "recall", "f1", "support")
"""Keys of each per-class and averaged entry of ``metrics.json``."""


def metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], split: str) -> dict:
    """Classification metrics in the ``metrics.json`` layout.

    Args:
        y_true: true class ids, int, shape ``(n,)``.
        y_pred: predicted class ids, int, shape ``(n,)``.
        labels: class names in class-id order.
        split: the split's name, recorded.

    Returns:
        ``{"split", "n", "accuracy", "labels", "per_class": {label: {precision, recall, f1,
        support}}, "macro_avg": {...}, "weighted_avg": {...}, "confusion_matrix": [[int]]}``;
        confusion-matrix rows are true classes and columns predicted classes, in class-id order.
    """
    ids = list(range(len(labels)))
    report = classification_report(
        y_true, y_pred, labels=ids, target_names=labels, output_dict=True, zero_division=0
    )

    def entry(row: dict) -> dict:
        return {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }

    return {
        "split": split,
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "labels": list(labels),
        "per_class": {label: entry(report[label]) for label in labels},
        "macro_avg": entry(report["macro avg"]),
        "weighted_avg": entry(report["weighted avg"]),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).astype(int).tolist(),
    }


def evaluate(
    artifacts_dir: Path, *, split: str = "test", batch_size: int = 32, verbose: int = 1
) -> dict:
    """Evaluates ``model.keras`` on one split of the manifest and writes the results.

    Writes ``metrics.json`` (``metrics_<split>.json`` for a split other than test),
    ``confusion_matrix.png`` and ``training_curves.png`` (when ``history.json`` exists).

    Args:
        artifacts_dir: holds ``model.keras``, ``manifest.csv``, ``labels.txt``.
        split: which split to score.
        batch_size: images per forward pass.
        verbose: Keras predict verbosity.

    Returns:
        The metrics dict (see :func:`metrics`).

    Raises:
        FileNotFoundError: no model or manifest.
        ValueError: the split is empty.
    """
    import keras

    artifacts_dir = Path(artifacts_dir)
    model_path = artifacts_dir / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found; run python -m training train first")
    net = keras.models.load_model(model_path)
    labels = read_labels(artifacts_dir / "labels.txt")
    size = int(net.input_shape[1])
    arrays = dataset.load_split(read_manifest(artifacts_dir / "manifest.csv"), labels, split, size)
    if not len(arrays):
        raise ValueError(f"the manifest has no {split} image")
    probabilities = net.predict(
        arrays.images.astype(np.float32), batch_size=batch_size, verbose=verbose
    )
    result = metrics(arrays.labels, probabilities.argmax(axis=1), labels, split)
    name = "metrics.json" if split == "test" else f"metrics_{split}.json"
    (artifacts_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    suffix = "" if split == "test" else f"_{split}"
    plots.confusion_matrix_png(result, artifacts_dir / f"confusion_matrix{suffix}.png")
    history_path = artifacts_dir / "history.json"
    if history_path.exists():
        plots.training_curves_png(
            json.loads(history_path.read_text()), artifacts_dir / "training_curves.png"
        )
    return result
