"""Published versions side by side, in one run, on the test split and the kept-out photos.

``python -m training compare --versions 1 2`` loads each exported version's ``serving_default``
signature (the SavedModel TF Serving loads, not the Keras file), feeds it the same decoded test
photos upright and turned 90/180/270 degrees (pixels, ``np.rot90``), and the kept-out
off-category photos of the manifest (``offclass_random``, ``offclass_labels``), and scores each
version at its own rule: a version whose signature has ``abstain`` (docs/CONTRACTS.md §2) files
what it does not abstain on; a version without one files a photo when its top-1 probability is at
least ``--min-confidence`` (0.5, the nightly job's rule for such versions). This is how the
README's version table is measured, so its figures come from one run.

It reads the test split: run it once per published candidate, never to choose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import (
    ABSTAIN_REASON_LOW_CONFIDENCE,
    INPUT_IMAGES,
    LABELS_FILENAME,
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
    read_labels,
    version_folders,
)
from training import calibration
from training.manifest import read_manifest
from training.sources import OTHER_LABEL

DEFAULT_MIN_CONFIDENCE = 0.5
"""Top-1 probability a version without an abstain rule needs to file a photo (the job's rule)."""

KEPT_OUT_SPLITS = ("offclass_random", "offclass_labels")
"""Manifest splits of off-category photos no training step, rule or choice ever read."""


@dataclass(frozen=True)
class Signature:
    """One loaded version's ``serving_default`` function.

    Attributes:
        version: the version number (the folder name under the base path).
        labels: its ``K`` labels, in column order of ``probabilities``.
        has_rule: whether the signature answers ``abstain`` and ``abstain_reason``.
        size: the input side in pixels (``H == W``).
        fn: the concrete function ``signatures["serving_default"]``.
        min_confidence: the top-1 rule used when ``has_rule`` is false.
    """

    version: int
    labels: list[str]
    has_rule: bool
    size: int
    fn: object
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    def outputs(self, images: np.ndarray, batch_size: int = 32) -> calibration.RuleOutputs:
        """Runs the signature over ``images`` in batches.

        Args:
            images: uint8 ``(n, size, size, 3)``.
            batch_size: images per call.

        Returns:
            float ``(n, K)`` probabilities, ``known_probability`` (1.0 without a rule), bool
            ``abstain`` and str ``abstain_reason`` per photo.
        """
        import tensorflow as tf

        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), batch_size):
            answer = self.fn(**{INPUT_IMAGES: tf.constant(images[start : start + batch_size])})
            for key, value in answer.items():
                parts.setdefault(key, []).append(value.numpy())
        out = {key: np.concatenate(value) for key, value in parts.items()}
        probabilities = out[OUTPUT_PROBABILITIES].astype(np.float64)
        if self.has_rule:
            abstain = out[OUTPUT_ABSTAIN].astype(bool)
            reason = np.array([r.decode() for r in out[OUTPUT_ABSTAIN_REASON]], dtype=object)
            known = out.get(OUTPUT_KNOWN_PROBABILITY, np.ones(len(images))).astype(np.float64)
        else:
            abstain = probabilities.max(axis=1) < self.min_confidence
            reason = np.where(abstain, ABSTAIN_REASON_LOW_CONFIDENCE, "").astype(object)
            known = np.ones(len(images))
        return calibration.RuleOutputs(probabilities, known, abstain, reason.astype(str))


def load(base_path: Path, version: int, min_confidence: float) -> Signature:
    """Loads ``<base_path>/<version>`` with ``tf.saved_model.load``.

    Raises:
        FileNotFoundError: no such version folder or no labels file.
        KeyError: the SavedModel has no ``serving_default`` signature.
    """
    import tensorflow as tf

    folder = Path(base_path) / str(version)
    labels = read_labels(folder / "assets.extra" / LABELS_FILENAME)
    fn = tf.saved_model.load(str(folder)).signatures[SIGNATURE_NAME]
    shape = fn.structured_input_signature[1][INPUT_IMAGES].shape
    return Signature(
        version=version,
        labels=labels,
        has_rule=OUTPUT_ABSTAIN in fn.structured_outputs,
        size=int(shape[1]),
        fn=fn,
        min_confidence=min_confidence,
    )


def score(sig: Signature, entries: list, batch_size: int = 32) -> dict:
    """One version's figures (see :func:`compare`)."""
    from training import dataset  # TensorFlow: imported once the inputs are checked
    from training.evaluate import filing_figures

    upright = dataset.load_split(
        [e for e in entries if e.label in sig.labels], sig.labels, "test", sig.size
    )
    y = upright.labels.astype(np.int64)
    out = sig.outputs(upright.images, batch_size)
    result: dict = {
        "rule": "signature abstain" if sig.has_rule else f"top-1 >= {sig.min_confidence}",
        "accuracy": float((out.probabilities.argmax(axis=1) == y).mean()),
        "filing": filing_figures(out, y),
        "turned": {},
        "off_category_filed": {},
    }
    right = wrong = 0
    for k in (1, 2, 3):
        turned = np.ascontiguousarray(np.rot90(upright.images, k, axes=(1, 2)))
        answered = sig.outputs(turned, batch_size)
        figures = filing_figures(answered, y)
        figures["accuracy"] = float((answered.probabilities.argmax(axis=1) == y).mean())
        result["turned"][str(90 * k)] = figures
        right += figures["filed_right"] * len(y)
        wrong += figures["filed_wrong"] * len(y)
    result["turned"]["all"] = {
        "filed_right": right / (3 * len(y)),
        "filed_wrong": wrong / (3 * len(y)),
    }
    for part in KEPT_OUT_SPLITS:
        rows = [e for e in entries if e.split == part and e.label == OTHER_LABEL]
        if rows:
            kept = dataset.load_split(rows, [OTHER_LABEL], part, sig.size)
            filed = ~sig.outputs(kept.images, batch_size).abstain
            result["off_category_filed"][part] = {"n": len(rows), "filed": float(filed.mean())}
    return result


def check_inputs(
    base_path: Path, versions: list[int], artifacts_dir: Path, min_confidence: float
) -> None:
    """Checks what :func:`compare` needs before TensorFlow loads (seconds) and scoring starts.

    Raises:
        FileNotFoundError: no ``manifest.csv``, or a version folder without a SavedModel and
            its labels (the message lists the versions the base path has).
        ValueError: a version given twice, or ``min_confidence`` outside ``(0, 1]``.
    """
    manifest = Path(artifacts_dir) / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} not found: run python -m training prepare first (make train's first "
            "step), or pass --artifacts with a prepared folder"
        )
    repeated = sorted({v for v in versions if versions.count(v) > 1})
    if repeated:
        raise ValueError(f"version {repeated[0]} is given twice")
    if not 0 < min_confidence <= 1:
        raise ValueError(f"--min-confidence must be in (0, 1], got {min_confidence}")
    base = Path(base_path)
    names = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    present = sorted(version_folders(names))
    for version in versions:
        folder = base / str(version)
        if (
            not (folder / "saved_model.pb").is_file()
            or not (folder / "assets.extra" / LABELS_FILENAME).is_file()
        ):
            there = ", ".join(map(str, present)) or "none"
            raise FileNotFoundError(
                f"no exported version {version} under {base} (a SavedModel with "
                f"assets.extra/{LABELS_FILENAME}); versions there: {there}"
            )


def compare(
    base_path: Path,
    versions: list[int],
    artifacts_dir: Path,
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    batch_size: int = 32,
) -> dict:
    """Scores every version in ``versions`` on the same photos in this one process.

    Args:
        base_path: the model base path (``models/fashion``).
        versions: version numbers, e.g. ``[1, 2]``.
        artifacts_dir: holds ``manifest.csv`` (``python -m training prepare``'s output).
        min_confidence: the top-1 rule of a version without an abstain rule.
        batch_size: images per signature call.

    Returns:
        ``{"versions": {"<v>": {"rule", "accuracy", "filing" (precision, coverage, ...),
        "turned" ({"90", "180", "270"}: filing figures and accuracy; "all": filed_right,
        filed_wrong), "off_category_filed" ({split: {"n", "filed"}})}}}``; also written to
        ``<artifacts_dir>/compare.json``.

    Raises:
        FileNotFoundError, ValueError: see :func:`check_inputs`.
    """
    check_inputs(base_path, versions, artifacts_dir, min_confidence)
    entries = read_manifest(Path(artifacts_dir) / "manifest.csv")
    result = {
        "base_path": str(base_path),
        "versions": {
            str(v): score(load(base_path, v, min_confidence), entries, batch_size) for v in versions
        },
    }
    (Path(artifacts_dir) / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict) -> str:
    """The README's Markdown table of :func:`compare`'s result, one column per version."""
    versions = list(result["versions"])

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [
        ("accuracy", lambda r: r["accuracy"]),
        ("filed precision", lambda r: r["filing"]["precision"]),
        ("coverage", lambda r: r["filing"]["coverage"]),
        *[
            (f"turned {a}°: accuracy", lambda r, a=a: r["turned"][a]["accuracy"])
            for a in ("90", "180", "270")
        ],
        ("turned filed right", lambda r: r["turned"]["all"]["filed_right"]),
        ("turned 90° filed wrong", lambda r: r["turned"]["90"]["filed_wrong"]),
        ("turned filed wrong", lambda r: r["turned"]["all"]["filed_wrong"]),
        *[
            (
                f"off-category filed ({part})",
                lambda r, p=part: r["off_category_filed"].get(p, {}).get("filed"),
            )
            for part in KEPT_OUT_SPLITS
        ],
    ]
    lines = [
        "| figure | " + " | ".join(f"version {v}" for v in versions) + " |",
        "|---" * (len(versions) + 1) + "|",
    ]
    for name, get in rows:
        lines.append(
            f"| {name} | " + " | ".join(cell(get(result["versions"][v])) for v in versions) + " |"
        )
    return "\n".join(lines)
