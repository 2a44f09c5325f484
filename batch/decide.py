"""Turning one ``/predict_batch`` item into a decision: where the file goes, or that it waits.

Pure functions, no I/O. The rules are docs/CONTRACTS.md section 5: an item error with an
input-kind code goes to quarantine; a prediction below the confidence threshold goes to
``_uncertain``; anything else that is not a prediction waits in incoming for the next run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

QUARANTINE_CODES = frozenset(
    {
        "empty_file",
        "not_an_image",
        "corrupt_image",
        "unsupported_format",
        "image_too_large",
    }
)
"""Item error codes that mean the file itself is bad (CONTRACTS.md section 5): quarantine."""

UNCERTAIN_FOLDER = "_uncertain"
"""Sub-folder of ``--processed`` for predictions below ``--min-confidence``."""

_SAFE_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Decision:
    """What to do with one file after the gateway answered.

    Attributes:
        outcome: ``category``, ``uncertain`` or ``quarantine`` (file it), or ``retry``
            (leave it in incoming; ledger ``defer``).
        category: predicted label (``category``/``uncertain``), else None.
        confidence: top-1 probability in [0, 1], else None.
        top3: ``label:probability`` pairs joined with ``;`` (4 decimals), else None.
        error_code: the item's error code (quarantine / retry), else None.
        error_message: the item's error message, else None.
    """

    outcome: str
    category: str | None = None
    confidence: float | None = None
    top3: str | None = None
    error_code: str | None = None
    error_message: str | None = None


def folder_name(label: str) -> str:
    """A label as a safe folder name: only ``[A-Za-z0-9._-]``, never hidden or ``_``-reserved.

    Args:
        label: a class label from the model, e.g. ``"t-shirt"``.

    Returns:
        The label itself for ordinary labels (all ten release labels are unchanged).
    """
    name = _SAFE_LABEL.sub("_", label).lstrip("._")
    return name or "unnamed"


def decide(item: dict[str, Any], min_confidence: float) -> Decision:
    """Decides the fate of one ``predictions[i]`` object.

    Args:
        item: a prediction (``label``, ``confidence``, ``top_k``) or ``{"error": {code,
            message}}`` as in CONTRACTS.md section 4.
        min_confidence: threshold in [0, 1]; a confidence strictly below it is uncertain.

    Returns:
        The decision.
    """
    error = item.get("error")
    if error is not None:
        code = str(error.get("code", "unknown")) if isinstance(error, dict) else "unknown"
        message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        outcome = "quarantine" if code in QUARANTINE_CODES else "retry"
        return Decision(outcome, error_code=code, error_message=message)
    try:
        label = str(item["label"])
        confidence = float(item["confidence"])
        top3 = ";".join(
            f"{k.get('label')}:{float(k.get('probability', 0.0)):.4f}"
            for k in (item.get("top_k") or [])[:3]
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return Decision(
            "retry", error_code="bad_response", error_message=f"malformed prediction: {item!r:.200}"
        )
    outcome = "category" if confidence >= min_confidence else "uncertain"
    return Decision(outcome, category=label, confidence=confidence, top3=top3 or None)
