"""A tiny Keras classifier with an off-category column whose abstain decisions are known exactly.

The model averages the pixels, scales them to 0..1 and applies one softmax Dense layer with fixed
weights: a solid-colour photo's raw softmax is ``softmax(rgb / 255 @ W)``, computed here in NumPy.
With :data:`RULE` (temperature 2, off-category column 3, ``min_known_probability`` 0.5,
``min_confidence`` 0.6) the colours of :data:`COLOURS` land far from every threshold, so the
served ``abstain_reason`` of each is certain:

==========  =====================  =======================================================
colour      expected               why
==========  =====================  =======================================================
red         filed ``boot``         logits [6, 0, 0, 0]
green       filed ``scarf``        logits [0, 0, 6, 0]
blue        not_a_known_category   logits [0, 0, 0, 6]: known 0.13 (labels tie too: the
                                   known check comes first)
yellow      low_confidence         logits [6, 0, 6, 0]: boot and scarf tie near 0.48
black       low_confidence         logits 0: every label 1/3, known 0.75
==========  =====================  =======================================================

:func:`write_source` saves the model, ``labels.txt`` and ``abstain_rule.json`` side by side as
training does; :func:`export_in_subprocess` publishes it through ``python -m export`` in a child
process (the gateway's and job's test processes never load TensorFlow).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 16
"""Input height and width of the tiny model, pixels."""
LABELS = ["boot", "cap", "scarf"]
OTHER = 3
"""The off-category column of the Keras model's softmax."""
WEIGHTS = np.array(
    [[6.0, 0.0, 0.0, 0.0], [0.0, 0.0, 6.0, 0.0], [0.0, 0.0, 0.0, 6.0]], dtype=np.float32
)
"""Dense kernel (3, 4): one row per RGB channel (0..1), one column per softmax column."""
RULE: dict[str, Any] = {
    "schema_version": 1,
    "temperature": 2.0,
    "other_class_index": OTHER,
    "min_known_probability": 0.5,
    "min_confidence": 0.6,
    "target_precision": 0.97,
    "fitted_on": {"split": "synthetic", "images": 0, "note": "hand-set for tests"},
}
RULE_WITHOUT_OTHER: dict[str, Any] = {
    "schema_version": 1,
    "temperature": 2.0,
    "other_class_index": None,
    "min_known_probability": None,
    "min_confidence": 0.6,
}
"""For the 3-column variant (``with_other=False``): no off-category column, known is 1.0."""
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "black": (0, 0, 0),
}
EXPECTED: dict[str, tuple[str | None, str]] = {
    "red": ("boot", ""),
    "green": ("scarf", ""),
    "blue": (None, "not_a_known_category"),
    "yellow": (None, "low_confidence"),
    "black": (None, "low_confidence"),
}
"""Colour -> (label filed under or ``None``, abstain reason) with :data:`RULE`."""


def images(names: list[str] | None = None) -> np.ndarray:
    """Solid-colour uint8 images ``(n, SIZE, SIZE, 3)``, default every colour in order."""
    names = list(COLOURS) if names is None else names
    return np.stack([np.full((SIZE, SIZE, 3), COLOURS[n], np.uint8) for n in names])


def png(name: str, size: int = 40) -> bytes:
    """A solid-colour PNG (lossless, so decoding and resizing keep the colour exactly)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), COLOURS[name]).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_softmax(batch: np.ndarray, with_other: bool = True) -> np.ndarray:
    """The Keras model's softmax in NumPy, float64 ``(n, 4)`` (``(n, 3)`` without other)."""
    weights = WEIGHTS if with_other else WEIGHTS[:, :OTHER]
    logits = batch.astype(np.float64).mean(axis=(1, 2)) / 255.0 @ weights
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def expected(batch: np.ndarray, with_other: bool = True):
    """What a version exported with the rule answers, via ``training.calibration.apply_rule``.

    Returns:
        ``training.calibration.RuleOutputs`` for ``batch``.
    """
    from training import calibration

    rule = RULE if with_other else RULE_WITHOUT_OTHER
    return calibration.apply_rule(
        raw_softmax(batch, with_other),
        temperature=rule["temperature"],
        other_class_index=rule["other_class_index"],
        min_known_probability=rule["min_known_probability"],
        min_confidence=rule["min_confidence"],
    )


def build_model(with_other: bool = True):
    """The Keras model: mean pixel -> /255 -> Dense softmax with :data:`WEIGHTS`."""
    import keras

    width = OTHER + 1 if with_other else OTHER
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    outputs = keras.layers.Dense(width, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.set_weights([WEIGHTS[:, :width], np.zeros(width, np.float32)])
    return model


def write_source(
    folder: Path, with_other: bool = True, rule: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Save ``model.keras``, ``labels.txt`` and ``abstain_rule.json`` as training leaves them.

    Args:
        folder: created if missing.
        with_other: 4 softmax columns with :data:`RULE`, else 3 with :data:`RULE_WITHOUT_OTHER`.
        rule: another rule document to write instead.

    Returns:
        ``{"model", "labels", "rule"}`` paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    build_model(with_other).save(folder / "model.keras")
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    document = rule if rule is not None else (RULE if with_other else RULE_WITHOUT_OTHER)
    (folder / "abstain_rule.json").write_text(json.dumps(document, indent=2) + "\n")
    return {
        "model": folder / "model.keras",
        "labels": folder / "labels.txt",
        "rule": folder / "abstain_rule.json",
    }


def export_in_subprocess(base_path: Path, version: int, work: Path) -> Path:
    """Write the source files under ``work`` and publish them via ``python -m export``.

    Args:
        base_path: the model base path.
        version: the version to publish.
        work: a scratch folder for the Keras model, labels and rule.

    Returns:
        The version folder.

    Raises:
        subprocess.CalledProcessError: the export failed (stderr in the exception).
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from support.abstain_models import write_source; from export.__main__ import main;"
        "paths = write_source(Path(sys.argv[2]));"
        "sys.exit(main(['--model', str(paths['model']), '--labels', str(paths['labels']),"
        "'--artifacts', sys.argv[2], '--base-path', sys.argv[3], '--version', sys.argv[4]]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(root / "tests"), str(work), str(base_path), str(version)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return Path(base_path) / str(version)
