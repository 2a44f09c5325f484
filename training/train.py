"""``train``: the two-phase transfer-learning run and its records.

Phase 1 ("head"): the base is frozen and only the new head learns. Phase 2 ("finetune"): the
last ``finetune_layers`` layers of the base are unfrozen (BatchNorm stays frozen, in inference
mode) and training continues at a lower, cosine-decayed learning rate. Each phase stops early on
validation loss and restores its best weights.

Training images are turned by a random quarter turn with ``turn_probability`` (so a photo
stored sideways gets its upright answer in one pass), and off-category photos in the manifest
(label ``_other``) are an extra, last output column. After training the abstain rule is fitted on
the calibration split (:mod:`training.rule`).

Writes ``model.keras``, ``history.json``, ``abstain_rule.json`` and ``training_run.json`` into
the artifacts folder.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from contract import LABELS_FILENAME, read_labels
from training import dataset, extra_labels, model, orient, rule
from training.manifest import read_manifest
from training.settings import TrainConfig
from training.sources import ALL_SPLITS, OTHER_LABEL

CLASSIFIER_FILENAME = "classifier.keras"
"""The upright classifier alone, kept beside ``model.keras`` when an orientation step is fitted."""


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Per-class loss weights ``n / (k * n_c)`` (scikit-learn's "balanced" rule).

    Args:
        labels: int class ids of the training split, shape ``(n,)``.
        num_classes: ``k``; classes absent from ``labels`` get weight 1.0.

    Returns:
        ``{class_id: weight}`` for every class id.
    """
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    table = {i: 1.0 for i in range(num_classes)}
    table.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return table


def _compile(
    net: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    label_smoothing: float,
) -> None:
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def _fit(
    net: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    epochs: int,
    config: TrainConfig,
    weights: dict[int, float] | None,
    verbose: int,
) -> dict:
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    # The pipeline shuffles (seeded) itself; Keras cannot shuffle a tf.data.Dataset.
    result = net.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=weights,
        callbacks=[stop],
        shuffle=False,
        verbose=verbose,
    )
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    losses = history.get("val_loss", [])
    history["best_epoch"] = int(np.argmin(losses)) + 1 if losses else 0
    return history


def train(
    artifacts_dir: Path, config: TrainConfig, *, verbose: int = 1, argv: list[str] | None = None
) -> dict:
    """Trains the classifier on the manifest in ``artifacts_dir`` and saves the results there.

    Args:
        artifacts_dir: holds ``manifest.csv``, ``labels.txt`` and ``prepare_report.json``
            (from ``prepare``); receives ``model.keras``, ``history.json``, ``training_run.json``.
        config: hyperparameters.
        verbose: Keras verbosity (1 = a progress bar per epoch, 2 = a line per epoch, 0 = none).
        argv: the command line recorded in ``training_run.json`` (default ``sys.argv``).

    Returns:
        The ``training_run.json`` record.

    Raises:
        FileNotFoundError: no manifest or no weights file.
        ValueError: the manifest has no training or no validation image.
    """
    started = datetime.now(UTC)
    t0 = time.monotonic()
    artifacts_dir = Path(artifacts_dir)
    keras.utils.set_random_seed(config.seed)
    entries = read_manifest(artifacts_dir / "manifest.csv")
    labels = read_labels(artifacts_dir / LABELS_FILENAME)
    report_path = artifacts_dir / "prepare_report.json"
    prepare_report = json.loads(report_path.read_text()) if report_path.exists() else None
    report = prepare_report or {}
    size = config.input_size

    columns = rule.model_classes(labels, entries)
    train_arrays = dataset.load_split(entries, columns, "train", size)
    val_arrays = dataset.load_split(
        [e for e in entries if e.label in columns], columns, "validation", size
    )
    if not len(train_arrays) or not len(val_arrays):
        raise ValueError("the manifest needs train and validation images; run prepare first")
    if config.validate_turned:
        val_arrays = dataset.with_one_turn(val_arrays, config.seed)
    k = len(columns)
    augment = dataset.augmenter(config.zoom, config.translate, config.seed)
    train_ds = dataset.pipeline(
        train_arrays,
        k,
        config.batch_size,
        shuffle=True,
        augment=augment,
        seed=config.seed,
        turn_probability=config.turn_probability,
    )
    val_ds = dataset.pipeline(val_arrays, k, config.batch_size)
    weights = class_weights(train_arrays.labels, k) if config.class_weights else None

    base = model.build_base(config.alpha, size, config.resolved_weights())
    net = model.build_classifier(base, k, config.dropout)

    model.freeze_base(base)
    _compile(net, config.head_learning_rate, config.label_smoothing)
    history = {"head": _fit(net, train_ds, val_ds, config.head_epochs, config, weights, verbose)}

    finetune_run = 0
    if config.finetune_epochs > 0:
        model.unfreeze_top(base, config.finetune_layers)
        steps = config.finetune_epochs * -(-len(train_arrays) // config.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(config.finetune_learning_rate, steps)
        _compile(net, schedule, config.label_smoothing)
        history["finetune"] = _fit(
            net, train_ds, val_ds, config.finetune_epochs, config, weights, verbose
        )
        finetune_run = len(history["finetune"]["loss"])

    orientation_record = None
    if config.orientation_head:
        net.save(artifacts_dir / CLASSIFIER_FILENAME)
        net, orientation_record = orient.fit(net, entries, columns, config.seed)
        (artifacts_dir / orient.RECORD_FILENAME).write_text(
            json.dumps(orientation_record, indent=2) + "\n"
        )
    net.save(artifacts_dir / "model.keras")
    (artifacts_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    train_seconds = round(time.monotonic() - t0, 1)
    fitted = rule.fit_rule(
        net,
        entries,
        labels,
        config.target_precision,
        max_off_category_filed=config.max_off_category_filed,
    )
    rule.write_rule(fitted, artifacts_dir)
    rule.write_record(fitted, artifacts_dir)
    splits = {
        split: {
            label: n
            for label in columns
            if (n := sum(1 for e in entries if e.split == split and e.label == label))
            or label != OTHER_LABEL
        }
        for split in ALL_SPLITS
        if split in ("train", "validation", "test") or any(e.split == split for e in entries)
    }
    record = {
        "command": shlex.join(argv if argv is not None else sys.argv),
        "seed": config.seed,
        "alpha": config.alpha,
        "input_size": [size, size],
        "weights": config.resolved_weights(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "wall_time_seconds": round(time.monotonic() - t0, 1),
        "train_seconds": train_seconds,
        "dataset": {
            "path": report.get("data_dir"),
            "extra_path": report.get("sources", {}).get("extra_dir"),
            "offclass_path": report.get("sources", {}).get("offclass_dir"),
            "offclass_origin": report.get("sources", {}).get("offclass_origin"),
            "splits": splits,
            "extra_labels": extra_labels.training_record(prepare_report),
        },
        "labels": labels,
        "model_columns": columns,
        "abstain_rule": fitted,
        "orientation": orientation_record,
        "hyperparameters": config.hyperparameters(),
        "epochs_run": {"head": len(history["head"]["loss"]), "finetune": finetune_run},
        "best_validation": {
            phase: {
                "epoch": h["best_epoch"],
                "val_loss": h["val_loss"][h["best_epoch"] - 1],
                "val_accuracy": h["val_accuracy"][h["best_epoch"] - 1],
            }
            for phase, h in history.items()
        },
    }
    (artifacts_dir / "training_run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
