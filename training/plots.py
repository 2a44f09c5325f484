"""PNG plots of the evaluation (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def confusion_matrix_png(metrics: dict, path: Path) -> None:
    """Draws the confusion matrix (rows true, columns predicted) with counts in the cells.

    Args:
        metrics: a ``metrics.json`` dict (``labels``, ``confusion_matrix``, ``accuracy``,
            ``split``).
        path: output PNG file.
    """
    matrix = np.asarray(metrics["confusion_matrix"])
    labels = metrics["labels"]
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{metrics['split']} split: accuracy {metrics['accuracy']:.3f}, {int(matrix.sum())} images"
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
        )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def training_curves_png(history: dict, path: Path) -> None:
    """Draws loss and accuracy per epoch, train and validation, both phases end to end.

    Args:
        history: a ``history.json`` dict: phase name -> {"loss", "accuracy", "val_loss",
            "val_accuracy": [float per epoch]}.
        path: output PNG file.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    offset = 0
    for phase, h in history.items():
        epochs = np.arange(offset + 1, offset + len(h["loss"]) + 1)
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(epochs, h[key], marker=".", label=f"{phase} train")
            ax.plot(epochs, h[f"val_{key}"], marker=".", label=f"{phase} validation")
        offset += len(h["loss"])
        if phase != list(history)[-1]:
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", linestyle=":")
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def precision_coverage_png(metrics: dict, path: Path) -> None:
    """Draws precision against coverage as the confidence threshold moves, with the rule's point.

    Args:
        metrics: a ``metrics.json`` dict with ``precision_coverage`` (curve name ->
            ``{"threshold", "coverage", "precision"}`` lists), ``filing`` and ``rule``.
        path: output PNG file.
    """
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for name, curve in metrics["precision_coverage"].items():
        ax.plot(
            curve["coverage"],
            curve["precision"],
            linewidth=2 if name == "upright" else 1,
            label=name,
        )
    filing, fitted = metrics["filing"], metrics["rule"]
    if filing["precision"] is not None:
        ax.scatter(
            [filing["coverage"]],
            [filing["precision"]],
            color="black",
            zorder=3,
            label=f"rule (min_confidence {fitted['min_confidence']:.2f})",
        )
    ax.axhline(fitted["target_precision"], color="grey", linestyle=":", label="target precision")
    ax.set_xlabel("coverage (share of photos filed)")
    ax.set_ylabel("precision (share of filed photos right)")
    ax.set_title(f"{metrics['split']} split: precision-coverage at the abstain rule")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_png(metrics: dict, path: Path) -> None:
    """Draws the reliability diagram before and after temperature scaling.

    Args:
        metrics: a ``metrics.json`` dict with ``calibration``: ``{"before"|"after": {"ece",
            "bins": [{"confidence", "accuracy", "n"}]}, "temperature"}``.
        path: output PNG file.
    """
    cal = metrics["calibration"]
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name in ("before", "after"):
        table = cal[name]["bins"]
        ax.plot(
            [b["confidence"] for b in table],
            [b["accuracy"] for b in table],
            marker="o",
            label=f"{name} (ECE {cal[name]['ece']:.3f})",
        )
    ax.set_xlabel("mean top-1 probability in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{metrics['split']} split: reliability, temperature {cal['temperature']:.2f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
