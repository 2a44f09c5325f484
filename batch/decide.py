"""Turning one ``/predict_batch`` item into a decision: where the file goes, or that it waits.

Pure functions, no I/O. The rules are docs/CONTRACTS.md section 5: an item error with an
input-kind code goes to quarantine; a prediction the model version abstains on goes to
``_uncertain`` with the version's reason; anything else that is not a prediction waits in incoming
for the next run. Which predictions are uncertain:

- ``--min-confidence X`` given: top-1 confidence below ``X`` (reason ``low_confidence``); the
  version's own rule is ignored;
- otherwise the version's rule, i.e. the prediction's ``abstain`` and ``abstain_reason``;
- a version without a rule (no ``abstain`` key): top-1 below :data:`DEFAULT_MIN_CONFIDENCE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract import ABSTAIN_REASON_LOW_CONFIDENCE, folders

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
"""Sub-folder of ``--processed`` for the predictions the job does not file under a label."""
DEFAULT_MIN_CONFIDENCE = 0.5
"""Top-1 threshold for a version without an abstain rule when ``--min-confidence`` is not set."""
LOW_CONFIDENCE = ABSTAIN_REASON_LOW_CONFIDENCE
"""The reason recorded for a top-1 below a plain threshold (the contract's reason name)."""


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
        abstain_reason: why the file goes to ``_uncertain`` (``low_confidence``,
            ``not_a_known_category``, or another reason the version gave), else None.
        known_probability: the version's probability that the photo is one of its labels, when
            the version has a rule, else None.
    """

    outcome: str
    category: str | None = None
    confidence: float | None = None
    top3: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    abstain_reason: str | None = None
    known_probability: float | None = None


def folder_name(label: str) -> str:
    """The folder a label's photos are filed under: :func:`contract.folders.label_to_folder`.

    Reversible (``folder_to_label``), never hidden, never starting with ``_`` (so never one of
    the job's own folders such as ``_uncertain``); the ten release labels are unchanged.

    Args:
        label: a class label from the model, non-empty, e.g. ``"Casual Shoes"``.

    Returns:
        The folder name, e.g. ``"Casual_Shoes"``.

    Raises:
        ValueError: ``label`` is empty (:func:`decide` never files such a prediction).
    """
    return folders.label_to_folder(label)


def decide(item: dict[str, Any], min_confidence: float | None = None) -> Decision:
    """Decides the fate of one ``predictions[i]`` object.

    Args:
        item: a prediction (``label``, ``confidence``, ``top_k`` and, from a version with an
            abstain rule, ``abstain``, ``abstain_reason``, ``known_probability``) or
            ``{"error": {code, message}}`` as in CONTRACTS.md section 4.
        min_confidence: ``--min-confidence``: a plain top-1 threshold in [0, 1] that replaces
            the version's rule (a confidence strictly below it is uncertain); ``None`` = the
            version's rule, or :data:`DEFAULT_MIN_CONFIDENCE` for a version without one.

    Returns:
        The decision; a prediction whose fields do not parse is ``retry`` (``bad_response``).
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
        known = item.get("known_probability")
        known = None if known is None else float(known)
        abstain = item.get("abstain")
        if abstain is not None and not isinstance(abstain, bool):
            raise TypeError("abstain is not a boolean")
        if not label:
            raise ValueError("empty label")
    except (AttributeError, KeyError, TypeError, ValueError):
        return Decision(
            "retry", error_code="bad_response", error_message=f"malformed prediction: {item!r:.200}"
        )
    if min_confidence is not None or abstain is None:
        threshold = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
        reason = LOW_CONFIDENCE if confidence < threshold else None
    else:
        reason = (str(item.get("abstain_reason") or "") or "abstain") if abstain else None
    return Decision(
        "uncertain" if reason else "category",
        category=label,
        confidence=confidence,
        top3=top3 or None,
        abstain_reason=reason,
        known_probability=known,
    )
