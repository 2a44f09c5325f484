"""``evaluate``: test-split metrics of the trained model, written as JSON plus plots.

Besides accuracy and per-class figures of the plain top-1 (over the known labels), a model with
an abstain rule (``abstain_rule.json``) is judged on what the rule does with photos it never
saw: precision and coverage of filing on the split upright, the same photos turned 90, 180 and
270 degrees (pixels), the kept-out off-category photos (a random part of each label, and whole
labels), calibration error before and after temperature scaling, and a precision-coverage curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from contract import LABELS_FILENAME, RULE_FILENAME, read_labels
from training import calibration, dataset, plots, rule
from training.manifest import read_manifest
from training.sources import OTHER_LABEL

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

    import training.orientation  # noqa: F401  registers the orientation step for load_model

    artifacts_dir = Path(artifacts_dir)
    model_path = artifacts_dir / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found; run python -m training train first")
    net = keras.models.load_model(model_path)
    labels = read_labels(artifacts_dir / LABELS_FILENAME)
    size = int(net.input_shape[1])
    entries = read_manifest(artifacts_dir / "manifest.csv")
    arrays = dataset.load_split([e for e in entries if e.label in labels], labels, split, size)
    if not len(arrays):
        raise ValueError(f"the manifest has no {split} image")
    columns = rule.model_classes(labels, entries)
    other = columns.index(OTHER_LABEL) if OTHER_LABEL in columns else None
    p_raw = rule.predict(net, arrays, batch_size)
    probabilities, _ = calibration.split_known(p_raw, other)
    result = metrics(arrays.labels, probabilities.argmax(axis=1), labels, split)
    suffix = "" if split == "test" else f"_{split}"
    rule_path = artifacts_dir / RULE_FILENAME
    if rule_path.is_file():
        document = json.loads(rule_path.read_text())
        result.update(
            judge_rule(
                net, document, entries, arrays, p_raw, columns, split=split, batch_size=batch_size
            )
        )
        if split == "test":
            rule.write_record(
                None,
                artifacts_dir,
                test={
                    k: result[k]
                    for k in ("filing", "turned", "off_category", "unseen_mix", "bars")
                    if k in result
                }
                | {
                    "accuracy": result["accuracy"],
                    "ece": {k: result["calibration"][k]["ece"] for k in ("before", "after")},
                },
            )
        plots.precision_coverage_png(result, artifacts_dir / f"precision_coverage{suffix}.png")
        plots.reliability_png(result, artifacts_dir / f"reliability{suffix}.png")
    name = "metrics.json" if split == "test" else f"metrics_{split}.json"
    (artifacts_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    plots.confusion_matrix_png(result, artifacts_dir / f"confusion_matrix{suffix}.png")
    history_path = artifacts_dir / "history.json"
    if history_path.exists():
        plots.training_curves_png(
            json.loads(history_path.read_text()), artifacts_dir / "training_curves.png"
        )
    return result


BARS = {
    "accuracy": 0.92,
    "filed_precision": 0.95,
    "coverage": 0.80,
    "turned_filed_right": 0.70,
    "off_category_filed_max": 0.30,
}
"""Issue 11's bars, checked in ``metrics.json`` (``bars``)."""


def filing_figures(outputs: calibration.RuleOutputs, y: np.ndarray) -> dict:
    """Precision and coverage of filing at a rule.

    Args:
        outputs: the rule's outputs for ``n`` photos.
        y: int ``(n,)`` true label ids, ``-1`` for off-category photos.

    Returns:
        ``{"n", "filed", "precision" (right among filed; None if none filed), "coverage" (filed
        among known-label photos), "filed_right" (filed under the right label, among known-label
        photos), "filed_wrong" (filed under a wrong label, among all photos),
        "off_category_filed" (filed among off-category photos), "abstained": {reason: count}}``;
        a figure with an empty denominator is None.
    """
    y = np.asarray(y)
    filed = ~outputs.abstain
    predicted = outputs.probabilities.argmax(axis=1)
    right = filed & (predicted == y)
    inside = y >= 0
    reasons, counts = np.unique(outputs.abstain_reason[~filed], return_counts=True)

    def share(mask: np.ndarray, rows: np.ndarray) -> float | None:
        return float(mask[rows].mean()) if rows.any() else None

    return {
        "n": len(y),
        "filed": int(filed.sum()),
        "precision": float(right.sum() / filed.sum()) if filed.any() else None,
        "coverage": share(filed, inside),
        "filed_right": share(right, inside),
        "filed_wrong": float((filed & ~right).mean()) if len(y) else None,
        "off_category_filed": share(filed, ~inside),
        "abstained": {str(r): int(c) for r, c in zip(reasons, counts, strict=True)},
    }


def _curve(outputs: calibration.RuleOutputs, y: np.ndarray, min_known: float | None) -> dict:
    """Precision-coverage as ``min_confidence`` moves, the rule's known test held fixed."""
    score = outputs.probabilities.max(axis=1).copy()
    if min_known is not None:
        score[outputs.known_probability < min_known] = -1.0
    y = np.asarray(y)
    correct = (outputs.probabilities.argmax(axis=1) == y) & (score >= 0)
    thresholds, precision, coverage = calibration.precision_coverage_curve(score, correct, y >= 0)
    keep = thresholds >= 0
    return {
        "threshold": thresholds[keep].round(5).tolist(),
        "precision": precision[keep].round(5).tolist(),
        "coverage": coverage[keep].round(5).tolist(),
    }


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _reliability(confidence: np.ndarray, correct: np.ndarray) -> dict:
    r = calibration.reliability(confidence, correct)
    filled = r.count > 0
    return {
        "ece": r.ece,
        "bins": [
            {
                "low": float(lo),
                "high": float(hi),
                "n": int(n),
                "confidence": float(c),
                "accuracy": float(a),
            }
            for lo, hi, n, c, a, f in zip(
                r.edges[:-1], r.edges[1:], r.count, r.confidence, r.accuracy, filled, strict=True
            )
            if f
        ],
    }


def judge_rule(
    net,
    document: dict,
    entries: list,
    arrays: dataset.SplitArrays,
    p_raw: np.ndarray,
    columns: list[str],
    *,
    split: str = "test",
    batch_size: int = 32,
) -> dict:
    """The rule's figures on the evaluated split, its turned copies and the kept-out photos.

    Args:
        net: the Keras classifier.
        document: its ``abstain_rule.json``.
        entries: the manifest (for the ``offclass_random`` and ``offclass_labels`` splits).
        arrays: the evaluated split's known-label photos, upright.
        p_raw: float ``(n, C)`` the model's softmax rows for ``arrays``.
        columns: the model's output columns.
        split: the evaluated split; other than ``test``, its own off-category photos stand in
            for the kept-out ones.
        batch_size: images per forward pass.

    Returns:
        ``{"rule", "filing" (upright), "turned" (per angle and overall), "off_category"
        (per kept-out kind: filed rate, per original label), "unseen_mix" (upright plus every
        kept-out off-category photo), "calibration" (ECE and reliability before/after),
        "precision_coverage" (curves), "bars"}``.
    """
    y = arrays.labels.astype(np.int64)
    min_known = document["min_known_probability"]
    upright = rule.apply(document, p_raw)
    out: dict = {"rule": document, "filing": filing_figures(upright, y)}
    curves = {"upright": _curve(upright, y, min_known)}

    turned: dict = {}
    for k in (1, 2, 3):
        images = dataset.SplitArrays(
            np.ascontiguousarray(np.rot90(arrays.images, k, axes=(1, 2))), y, arrays.paths
        )
        p = rule.predict(net, images, batch_size)
        o = rule.apply(document, p)
        figures = filing_figures(o, y)
        plain = calibration.split_known(p, document["other_class_index"])[0]
        figures["accuracy"] = float((plain.argmax(axis=1) == y).mean())
        turned[str(90 * k)] = figures
        curves[f"turned {90 * k}"] = _curve(o, y, min_known)
    angles = ("90", "180", "270")
    turned["all"] = {
        key: _mean_or_none([turned[a][key] for a in angles])
        for key in ("filed_right", "filed_wrong", "accuracy", "coverage")
    }
    filed = sum(turned[a]["filed"] for a in angles)
    right = sum((turned[a]["filed_right"] or 0.0) * turned[a]["n"] for a in angles)
    turned["all"]["precision"] = right / filed if filed else None
    out["turned"] = turned

    size = arrays.images.shape[1]
    off: dict = {}
    mix_p, mix_y = [p_raw], [y]
    # The test split is judged against the kept-out off-category photos; another split (e.g.
    # validation, while choosing) against its own off-category photos, so choosing never reads
    # the kept-out ones.
    off_splits = ("offclass_random", "offclass_labels") if split == "test" else (split,)
    for part in off_splits:
        rows = [e for e in entries if e.split == part and e.label == OTHER_LABEL]
        if not rows:
            continue
        kept = dataset.load_split(rows, columns, part, size)
        p = rule.predict(net, kept, batch_size)
        o = rule.apply(document, p)
        filed = ~o.abstain
        origin = np.array([Path(path).parent.name for path in kept.paths])
        off[part] = {
            "n": len(rows),
            "filed": float(filed.mean()),
            "abstained": filing_figures(o, np.full(len(rows), -1))["abstained"],
            "filed_by_label": {
                name: float(filed[origin == name].mean()) for name in sorted(set(origin))
            },
        }
        mix_p.append(p)
        mix_y.append(np.full(len(rows), -1))
    out["off_category"] = off
    if len(mix_p) > 1:
        mix = rule.apply(document, np.concatenate(mix_p))
        out["unseen_mix"] = filing_figures(mix, np.concatenate(mix_y))

    before = calibration.split_known(p_raw, document["other_class_index"])[0]
    out["calibration"] = {
        "temperature": document["temperature"],
        **{
            name: _reliability(p.max(axis=1), p.argmax(axis=1) == y)
            for name, p in (("before", before), ("after", upright.probabilities))
        },
    }
    out["precision_coverage"] = curves

    accuracy = float((before.argmax(axis=1) == y).mean())
    filing = out["filing"]
    figures = {
        "accuracy": accuracy,
        "filed_precision": filing["precision"],
        "coverage": filing["coverage"],
        "turned_filed_right": turned["all"]["filed_right"],
        **{f"off_category_filed_{s}": v["filed"] for s, v in off.items()},
    }
    passed = {
        "accuracy": accuracy >= BARS["accuracy"],
        "filed_precision": (filing["precision"] or 0) >= BARS["filed_precision"],
        "coverage": (filing["coverage"] or 0) >= BARS["coverage"],
        "turned_filed_right": figures["turned_filed_right"] >= BARS["turned_filed_right"],
        **{
            f"off_category_filed_{s}": v["filed"] <= BARS["off_category_filed_max"]
            for s, v in off.items()
        },
    }
    out["bars"] = {"thresholds": BARS, "figures": figures, "passed": passed}
    return out
