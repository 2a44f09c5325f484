"""The abstain rule file ``abstain_rule.json``: written by training, read and checked here.

Format (docs/CONTRACTS.md §2; schema_version 1)::

    {"schema_version": 1, "temperature": 1.7, "other_class_index": 10,
     "min_known_probability": 0.6, "min_confidence": 0.55, "target_precision": 0.97,
     "fitted_on": {...free-form provenance...}}

``other_class_index`` and ``min_known_probability`` may be ``null``; ``target_precision`` and
``fitted_on`` are optional records; other keys are kept as they are (copied into the version's
``assets.extra/`` and model card) and ignored. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

SCHEMA_VERSION: Final = 1


@dataclass(frozen=True)
class AbstainRule:
    """The parameters the serving signature applies to the model's softmax.

    Attributes:
        temperature: ``T > 0``; the log-probabilities are divided by it.
        other_class_index: the model's off-category softmax column, or ``None``.
        min_known_probability: abstain ``not_a_known_category`` below this known probability;
            ``None`` = never.
        min_confidence: abstain ``low_confidence`` when the top calibrated label probability is
            below this, in ``[0, 1]``.
        document: the whole parsed file, unknown keys included, for the model card.
    """

    temperature: float
    other_class_index: int | None
    min_known_probability: float | None
    min_confidence: float
    document: dict[str, Any] = field(default_factory=dict, compare=False)

    def model_width(self, num_labels: int) -> int:
        """The softmax width of the Keras model this rule fits.

        Args:
            num_labels: K, the labels of the version.

        Returns:
            ``K + 1`` with an off-category column, else ``K``.
        """
        return num_labels + (self.other_class_index is not None)

    def label_columns(self, num_labels: int) -> list[int]:
        """The model's softmax columns that are labels, in class-id order.

        Args:
            num_labels: K.

        Returns:
            ``K`` column indices (all but ``other_class_index``).
        """
        return [c for c in range(self.model_width(num_labels)) if c != self.other_class_index]

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``training.calibration.apply_rule``."""
        return {
            "temperature": self.temperature,
            "other_class_index": self.other_class_index,
            "min_known_probability": self.min_known_probability,
            "min_confidence": self.min_confidence,
        }


def _probability(document: dict[str, Any], key: str, nullable: bool) -> float | None:
    value = document.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        allowed = "a number in [0, 1]" + (" or null" if nullable else "")
        raise ValueError(f"{key} must be {allowed}, got {value!r}")
    return float(value)


def parse(text: str) -> AbstainRule:
    """Parse and check a rule file's text.

    Args:
        text: the JSON document.

    Returns:
        The :class:`AbstainRule`.

    Raises:
        ValueError: not JSON, not an object, another schema version, or a field out of range
            (the message names the field).
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("the rule must be a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"schema_version must be {SCHEMA_VERSION}, got {document.get('schema_version')!r}"
        )
    temperature = document.get("temperature")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    other = document.get("other_class_index")
    if other is not None and (isinstance(other, bool) or not isinstance(other, int) or other < 0):
        raise ValueError(f"other_class_index must be a column index >= 0 or null, got {other!r}")
    _probability(document, "target_precision", nullable=True)
    return AbstainRule(
        temperature=float(temperature),
        other_class_index=other,
        min_known_probability=_probability(document, "min_known_probability", nullable=True),
        min_confidence=_probability(document, "min_confidence", nullable=False),
        document=document,
    )


def read(path: Path) -> AbstainRule:
    """Read and check a rule file.

    Args:
        path: an ``abstain_rule.json``.

    Returns:
        The :class:`AbstainRule`.

    Raises:
        OSError: the file cannot be read.
        ValueError: see :func:`parse` (the message starts with the path).
    """
    try:
        return parse(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
