"""The model card: ``assets.extra/model_card.json``, what a version is and where it came from.

Built from the training run's artifacts (``training_run.json`` and ``metrics.json``, written by
``python -m training train`` / ``evaluate``). A missing artifact leaves its fields ``null`` and is
named in ``missing``, so a card never claims figures nobody measured. A version with an abstain
rule also carries the rule (``abstain_rule``) and, when training left one beside the model, its
calibration record (reliability and ECE before/after, what was tried) under ``calibration``.
No TensorFlow here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import preprocessing
from contract import (
    ABSTAIN_REASONS,
    INPUT_IMAGES,
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_CLASSES,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
)
from export.rule import AbstainRule

FILENAME: Final = "model_card.json"
SCHEMA_VERSION: Final = 1
TRAINING_RUN: Final = "training_run.json"
METRICS: Final = "metrics.json"
_METRIC_KEYS: Final = (
    "split",
    "accuracy",
    "per_class",
    "macro_avg",
    "weighted_avg",
    "confusion_matrix",
)
CALIBRATION_FILES: Final = ("calibration.json",)
"""Training's record of how the rule was fitted (``training.rule.RECORD_FILENAME``: reliability
and ECE before/after, what was tried); the first found is kept."""
_TRAINING_KEYS: Final = (
    "command",
    "seed",
    "started_at",
    "wall_time_seconds",
    "tensorflow_version",
    "keras_version",
    "weights",
    "hyperparameters",
    "epochs_run",
    "rule_refits",
)


@dataclass(frozen=True)
class TrainingArtifacts:
    """What the training run left in its artifacts folder.

    Attributes:
        training_run: parsed ``training_run.json``, or ``None`` if absent.
        metrics: parsed ``metrics.json``, or ``None`` if absent.
        missing: the file names that were absent.
    """

    training_run: dict[str, Any] | None
    metrics: dict[str, Any] | None
    missing: tuple[str, ...]


def read_artifacts(artifacts_dir: Path | None) -> TrainingArtifacts:
    """Read ``training_run.json`` and ``metrics.json`` if they exist.

    Args:
        artifacts_dir: the training artifacts folder, or ``None`` for none.

    Returns:
        The parsed files; absent ones are ``None`` and listed in ``missing``.

    Raises:
        ValueError: a file exists but is not a JSON object.
    """
    found: dict[str, dict[str, Any] | None] = {}
    for name in (TRAINING_RUN, METRICS):
        path = artifacts_dir / name if artifacts_dir is not None else None
        if path is None or not path.is_file():
            found[name] = None
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object")
        found[name] = data
    missing = tuple(name for name, data in found.items() if data is None)
    return TrainingArtifacts(found[TRAINING_RUN], found[METRICS], missing)


def read_calibration(*folders: Path | None) -> dict[str, Any] | None:
    """Read training's calibration record, whatever its keys.

    Args:
        folders: where to look, in order: the trained model's folder, then the artifacts folder
            (``None`` entries are skipped).

    Returns:
        ``{"file": name, **content}`` for the first of :data:`CALIBRATION_FILES` found, or
        ``None``. A file that is not a JSON object is kept as ``{"file": name, "unreadable":
        reason}`` rather than failing the export: it is a record, not an input.
    """
    for folder in (f for f in folders if f is not None):
        for name in CALIBRATION_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return {"file": name, "unreadable": str(exc)}
            if not isinstance(content, dict):
                return {"file": name, "unreadable": "not a JSON object"}
            return {"file": name, **content}
    return None


def _outputs(labels: list[str], rule: AbstainRule | None) -> dict[str, Any]:
    width = len(labels)
    outputs: dict[str, Any] = {
        OUTPUT_PROBABILITIES: {
            "dtype": "float32",
            "shape": [-1, width],
            "meaning": "softmax over labels, rows sum to 1"
            if rule is None
            else "calibrated softmax over labels (temperature, off-category column dropped), "
            "rows sum to 1",
        },
        OUTPUT_CLASSES: {
            "dtype": "string",
            "shape": [-1, width],
            "meaning": "labels[j] names probabilities[:, j], repeated per row",
        },
    }
    if rule is not None:
        outputs.update(
            {
                OUTPUT_KNOWN_PROBABILITY: {
                    "dtype": "float32",
                    "shape": [-1],
                    "meaning": "calibrated probability that the photo is one of the labels",
                },
                OUTPUT_ABSTAIN: {
                    "dtype": "bool",
                    "shape": [-1],
                    "meaning": "true: the version is not sure enough to file the photo",
                },
                OUTPUT_ABSTAIN_REASON: {
                    "dtype": "string",
                    "shape": [-1],
                    "meaning": '"" when filed, else ' + " or ".join(ABSTAIN_REASONS),
                },
            }
        )
    return outputs


def git_commit(repo_dir: Path) -> str:
    """The checked-out commit of the project.

    Args:
        repo_dir: any folder inside the git work tree.

    Returns:
        The 40-hex commit id from ``git rev-parse HEAD``, or ``"unknown"`` outside git.
    """
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dataset(training_run: dict[str, Any] | None) -> dict[str, Any] | None:
    if not training_run or not isinstance(training_run.get("dataset"), dict):
        return None
    dataset = training_run["dataset"]
    splits = dataset.get("splits") or {}
    return {
        "path": dataset.get("path"),
        "splits": splits,
        "split_counts": {split: sum(counts.values()) for split, counts in splits.items()},
        # photos added to train from the nightly job's corrections (None: none were given)
        "extra_labels": dataset.get("extra_labels"),
    }


def build(
    *,
    name: str,
    version: int,
    labels: list[str],
    input_size: tuple[int, int],
    artifacts: TrainingArtifacts,
    export_info: dict[str, Any],
    created_at: dt.datetime | None = None,
    rule: AbstainRule | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the card.

    Args:
        name: served model name, e.g. ``"fashion"``.
        version: the version number being published.
        labels: class names in class-id order.
        input_size: ``(height, width)`` of the ``images`` input, pixels.
        artifacts: the training run's files (see :func:`read_artifacts`).
        export_info: facts about this export (command, TensorFlow/Keras versions, git commit,
            source model path and sha256, warm-up source); stored under ``"export"``.
        created_at: creation time; defaults to now (UTC).
        rule: the abstain rule built into the signature, or ``None``; its whole file goes under
            ``"abstain_rule"`` and the signature lists the rule's outputs.
        calibration: training's calibration record (see :func:`read_calibration`), stored
            under ``"calibration"``.

    Returns:
        A JSON-serialisable dict (``schema_version`` 1); ``abstain_rule`` and ``calibration``
        (``null`` when training left no record) only for a version with a rule.

    Raises:
        ValueError: ``metrics.json`` lists labels different from ``labels`` (they describe
            another model).
    """
    metrics = artifacts.metrics
    if metrics is not None and "labels" in metrics and list(metrics["labels"]) != list(labels):
        raise ValueError(f"metrics.json labels {metrics['labels']} differ from labels {labels}")
    run = artifacts.training_run
    height, width = input_size
    created = (created_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    card = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "labels": list(labels),
        "num_classes": len(labels),
        "architecture": {
            "base": "MobileNetV2" if run else None,
            "alpha": run.get("alpha") if run else None,
            "weights": run.get("weights") if run else None,
        },
        "signature": {
            "name": SIGNATURE_NAME,
            "inputs": {
                INPUT_IMAGES: {
                    "dtype": "uint8",
                    "shape": [-1, height, width, 3],
                    "range": [0, 255],
                    "layout": "NHWC, RGB",
                }
            },
            "outputs": _outputs(labels, rule),
        },
        "preprocessing": dict(preprocessing.SPEC),
        "dataset": _dataset(run),
        "metrics": {k: metrics.get(k) for k in _METRIC_KEYS} if metrics else None,
        "training": {k: run.get(k) for k in _TRAINING_KEYS} if run else None,
        "export": export_info,
        "missing": list(artifacts.missing),
    }
    if rule is not None:
        card["abstain_rule"] = dict(rule.document)
        card["calibration"] = calibration
    return card


def write(card: dict[str, Any], path: Path) -> None:
    """Write the card as indented UTF-8 JSON.

    Args:
        card: from :func:`build`.
        path: the file to create.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read(path: Path) -> dict[str, Any]:
    """Read a card.

    Args:
        path: a ``model_card.json``.

    Returns:
        The parsed card.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a JSON object.
    """
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{path} is not a JSON object")
    return card
