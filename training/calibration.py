"""Calibration and abstain-threshold fitting: the one NumPy implementation of the abstain rule.

Training fits the rule with it, export checks the SavedModel against :func:`apply_rule`, and
the unit tests pin it on synthetic scores. The computation is the one in
notes/ABSTAIN_CONTRACT.md and docs/CONTRACTS.md §2:

    z = log(p_raw + EPSILON) / T;  q = softmax(z)
    known = 1 - q[:, other]            (1.0 without an off-category column)
    probabilities = q[:, label columns] / known
    reason = not_a_known_category if known < min_known_probability
             else low_confidence if max(probabilities) < min_confidence else ""

Everything is float64 NumPy; SciPy is imported only by :func:`fit_temperature`. No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from contract import ABSTAIN_REASON_LOW_CONFIDENCE, ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY

EPSILON: Final = 1e-12
"""Added to the model's softmax before the log, so a probability of 0 stays finite."""

NOT_A_KNOWN_CATEGORY: Final = ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY
"""Abstain reason: the calibrated off-category probability is too high (checked first)."""
LOW_CONFIDENCE: Final = ABSTAIN_REASON_LOW_CONFIDENCE
"""Abstain reason: the top calibrated label probability is below ``min_confidence``."""
FILED: Final = ""
"""The reason of a photo that is not abstained."""

TEMPERATURE_BOUNDS: Final = (0.05, 20.0)
"""Search interval of :func:`fit_temperature`; a fitted value at a bound means "no optimum"."""


def _rows(probabilities: np.ndarray) -> np.ndarray:
    array = np.asarray(probabilities, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"probabilities must be (n, k), got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    return array


def temperature_scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scales softmax outputs through their logs: ``softmax(log(p + EPSILON) / T)``.

    Args:
        probabilities: the model's softmax, shape ``(n, k)``, rows summing to 1.
        temperature: ``T > 0``; above 1 softens, below 1 sharpens, 1 leaves ``p`` (up to
            ``EPSILON``).

    Returns:
        float64 ``(n, k)``, rows summing to 1.

    Raises:
        ValueError: bad shape, negative or non-finite entries, or ``temperature <= 0``.
    """
    if not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    z = np.log(_rows(probabilities) + EPSILON) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean negative log-likelihood of the true columns after temperature scaling.

    Args:
        probabilities: the model's softmax, ``(n, k)``.
        labels: int column of the true class per row, ``(n,)``, in ``0..k-1``.
        temperature: ``T > 0``.

    Returns:
        ``mean(-log q[i, labels[i]])`` in nats.

    Raises:
        ValueError: shapes disagree or a label is out of range.
    """
    q = temperature_scale(probabilities, temperature)
    labels = _labels(labels, q.shape)
    return float(-np.log(q[np.arange(len(q)), labels] + EPSILON).mean())


def _labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be int of shape ({shape[0]},), got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= shape[1]):
        raise ValueError(f"labels must be in 0..{shape[1] - 1}")
    return labels


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature that minimises the negative log-likelihood on held-out rows.

    The search runs over ``log T`` (bounded Brent, SciPy's ``minimize_scalar``), where the NLL is
    smooth and unimodal for ordinary data.

    Args:
        probabilities: the model's softmax on the calibration rows, ``(n, k)``, ``n >= 1``.
        labels: their true columns, int ``(n,)`` (the off-category column included, if any).
        bounds: ``(low, high)`` search interval for ``T``.

    Returns:
        ``T`` in ``bounds``.

    Raises:
        ValueError: no rows, shapes disagree, or bad bounds.
    """
    from scipy.optimize import minimize_scalar

    array = _rows(probabilities)
    labels = _labels(labels, array.shape)
    if not len(array):
        raise ValueError("no rows to fit a temperature on")
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    logs = np.log(array + EPSILON)
    rows = np.arange(len(array))

    def nll(log_t: float) -> float:
        z = logs / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        return float((log_norm - z[rows, labels]).mean())

    result = minimize_scalar(
        nll, bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-7}
    )
    return float(np.clip(np.exp(result.x), low, high))


def split_known(
    calibrated: np.ndarray, other_class_index: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drops the off-category column and renormalises the label columns.

    Args:
        calibrated: temperature-scaled softmax ``(n, k)`` or ``(n, k + 1)``, rows summing to 1.
        other_class_index: the off-category column, or ``None`` when the model has none.

    Returns:
        ``(probabilities, known)``: float64 ``(n, k)`` rows summing to 1 over the labels, and
        float64 ``(n,)`` probability that the photo is one of the labels (all 1.0 without an
        off-category column).

    Raises:
        ValueError: ``other_class_index`` is not a column.
    """
    q = _rows(calibrated)
    if other_class_index is None:
        return q.copy(), np.ones(len(q))
    if not 0 <= other_class_index < q.shape[1] or q.shape[1] < 2:
        raise ValueError(
            f"other_class_index {other_class_index} is not one of {q.shape[1]} columns"
        )
    labels = np.delete(q, other_class_index, axis=1)
    # 1 - q[:, other] summed the other way: no cancellation when q[:, other] is close to 1, and
    # > 0 always (a softmax of finite logits has no zero column).
    known = labels.sum(axis=1)
    return labels / known[:, None], known


def reasons(
    probabilities: np.ndarray,
    known: np.ndarray,
    min_known_probability: float | None,
    min_confidence: float,
) -> np.ndarray:
    """Per-row abstain reason for calibrated outputs.

    Args:
        probabilities: calibrated label probabilities ``(n, k)``.
        known: calibrated known-category probability ``(n,)``.
        min_known_probability: abstain :data:`NOT_A_KNOWN_CATEGORY` below this; ``None`` = never.
        min_confidence: abstain :data:`LOW_CONFIDENCE` when ``max(probabilities) <`` this.

    Returns:
        ``str`` array ``(n,)``: :data:`NOT_A_KNOWN_CATEGORY` (checked first),
        :data:`LOW_CONFIDENCE` or :data:`FILED` (``""``).
    """
    confidence = np.asarray(probabilities).max(axis=1)
    out = np.where(confidence < min_confidence, LOW_CONFIDENCE, FILED)
    if min_known_probability is not None:
        out = np.where(np.asarray(known) < min_known_probability, NOT_A_KNOWN_CATEGORY, out)
    return out.astype(str)


@dataclass(frozen=True)
class RuleOutputs:
    """What a version with a rule answers per image (docs/CONTRACTS.md §2), in NumPy.

    Attributes:
        probabilities: float64 ``(n, k)`` calibrated label probabilities, rows sum to 1.
        known_probability: float64 ``(n,)``.
        abstain: bool ``(n,)``.
        abstain_reason: str ``(n,)``, ``""`` when filed.
    """

    probabilities: np.ndarray
    known_probability: np.ndarray
    abstain: np.ndarray
    abstain_reason: np.ndarray


def apply_rule(
    raw: np.ndarray,
    *,
    temperature: float,
    other_class_index: int | None,
    min_known_probability: float | None,
    min_confidence: float,
) -> RuleOutputs:
    """The reference computation of a version's calibrated outputs from its model's softmax.

    Args:
        raw: the Keras model's softmax ``(n, k)`` or ``(n, k + 1)`` with an off-category column.
        temperature: ``T > 0``.
        other_class_index: the off-category column or ``None``.
        min_known_probability: see :func:`reasons`.
        min_confidence: see :func:`reasons`.

    Returns:
        The :class:`RuleOutputs`.

    Raises:
        ValueError: bad shapes, temperature or column index.
    """
    q = temperature_scale(raw, temperature)
    probabilities, known = split_known(q, other_class_index)
    why = reasons(probabilities, known, min_known_probability, min_confidence)
    return RuleOutputs(probabilities, known, why != FILED, why)


@dataclass(frozen=True)
class Operating:
    """Filing figures at one setting of the thresholds.

    Attributes:
        min_known_probability: the off-category threshold (``None`` = not used).
        min_confidence: the top-1 threshold.
        precision: filed rows whose top label is right / filed rows (1.0 when none is filed);
            an off-category row that is filed is wrong.
        coverage: filed in-category rows / in-category rows.
        filed: rows filed (in- and off-category).
        reached: ``precision >= target`` at this setting.
    """

    min_known_probability: float | None
    min_confidence: float
    precision: float
    coverage: float
    filed: int
    reached: bool


def precision_coverage_curve(
    confidence: np.ndarray, correct: np.ndarray, in_category: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and coverage of filing ``confidence >= t`` for every distinct ``t``.

    Args:
        confidence: the score compared with the threshold, float ``(n,)``.
        correct: bool ``(n,)``, the row's top label is right (always ``False`` off-category).
        in_category: bool ``(n,)``, the row is one of the labels (default: all).

    Returns:
        ``(thresholds, precision, coverage)``, float64 each, thresholds descending (the distinct
        confidence values); ``coverage`` is filed in-category rows / in-category rows.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    inside = np.ones(len(confidence), bool) if in_category is None else np.asarray(in_category)
    order = np.argsort(-confidence, kind="stable")
    sorted_conf = confidence[order]
    right = np.cumsum(correct[order])
    filed_in = np.cumsum(inside[order])
    # last index of each run of equal confidence: every row >= t is filed together
    ends = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    filed = ends + 1
    precision = right[ends] / filed
    coverage = filed_in[ends] / max(int(inside.sum()), 1)
    return sorted_conf[ends], precision, coverage


def fit_min_confidence(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_precision: float,
    in_category: np.ndarray | None = None,
) -> Operating:
    """The lowest top-1 threshold whose filed precision reaches the target (most coverage).

    Rows file when ``confidence >= threshold``; the threshold is always one of the confidence
    values, so the figures are exact on these rows.

    Args:
        confidence: calibrated top-1 probability per row, ``(n,)``.
        correct: bool ``(n,)``, the top-1 label is right.
        target_precision: in ``(0, 1]``.
        in_category: bool ``(n,)``; off-category rows count as wrong when filed and are not in
            the coverage's denominator (default: all rows in category).

    Returns:
        The :class:`Operating` point (``min_known_probability`` ``None``). When no threshold
        reaches the target it files nothing: threshold just above the highest confidence,
        coverage 0, precision 1.0, ``reached`` ``False``.

    Raises:
        ValueError: ``target_precision`` outside ``(0, 1]`` or no rows.
    """
    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if not len(confidence):
        raise ValueError("no rows to fit a threshold on")
    thresholds, precision, coverage = precision_coverage_curve(confidence, correct, in_category)
    ok = np.flatnonzero(precision >= target_precision)
    if not len(ok):
        above = float(np.nextafter(thresholds[0], np.inf))
        return Operating(None, above, 1.0, 0.0, 0, False)
    best = ok[-1]  # thresholds descend: the last reaching index files the most rows
    filed = int((np.asarray(confidence) >= thresholds[best]).sum())
    return Operating(
        None, float(thresholds[best]), float(precision[best]), float(coverage[best]), filed, True
    )


def fit_thresholds(
    probabilities: np.ndarray,
    known: np.ndarray,
    labels: np.ndarray,
    target_precision: float,
    *,
    known_candidates: int = 101,
    max_off_category_filed: float | None = None,
) -> Operating:
    """Both thresholds of the rule, for the most coverage at the target filed precision.

    For each candidate ``min_known_probability`` (``None`` plus up to ``known_candidates``
    quantiles of ``known`` over the off-category rows), rows below it abstain and
    :func:`fit_min_confidence` picks ``min_confidence`` on the rest; the setting with the most
    coverage wins (ties: higher precision, then the lower ``min_known_probability``).

    Args:
        probabilities: calibrated label probabilities ``(n, k)``.
        known: calibrated known-category probability ``(n,)``.
        labels: true label column per row, int ``(n,)``; ``-1`` marks an off-category photo.
        target_precision: in ``(0, 1]``.
        known_candidates: how many ``min_known_probability`` values to try.
        max_off_category_filed: when given, a setting also has to file at most this share of
            the off-category rows (0..1) to count as reaching the target. Precision alone lets
            a model whose off-category photos are few among the rows file many of them (they
            cost little precision); the cap keeps "none of the labels" out of the folders.

    Returns:
        The best :class:`Operating` point; ``reached`` is ``False`` when none reaches the target
        (and the cap).

    Raises:
        ValueError: shapes disagree, no rows or a bad target.
    """
    probabilities = _rows(probabilities)
    known = np.asarray(known, dtype=np.float64)
    labels = np.asarray(labels)
    if known.shape != (len(probabilities),) or labels.shape != known.shape:
        raise ValueError("probabilities, known and labels must have the same number of rows")
    inside = labels >= 0
    confidence = probabilities.max(axis=1)
    correct = inside & (probabilities.argmax(axis=1) == labels)
    candidates: list[float | None] = [None]
    if (~inside).any():
        qs = np.linspace(0.0, 1.0, known_candidates)
        candidates += sorted({float(v) for v in np.quantile(known[~inside], qs)})
        candidates.append(float(np.nextafter(known[~inside].max(), np.inf)))
    best: Operating | None = None
    for threshold in candidates:
        keep = np.ones(len(known), bool) if threshold is None else known >= threshold
        if keep.any():
            point = fit_min_confidence(
                confidence[keep], correct[keep], target_precision, inside[keep]
            )
            coverage = point.coverage * inside[keep].sum() / max(int(inside.sum()), 1)
        else:
            point, coverage = Operating(None, 1.0, 1.0, 0.0, 0, False), 0.0
        reached = point.reached
        if max_off_category_filed is not None and (~inside).any():
            filed = keep & (confidence >= point.min_confidence)
            reached = reached and float(filed[~inside].mean()) <= max_off_category_filed
        candidate = Operating(
            threshold,
            point.min_confidence,
            point.precision,
            float(coverage),
            point.filed,
            reached,
        )
        if best is None or _better(candidate, best):
            best = candidate
    assert best is not None
    return best


def _better(a: Operating, b: Operating) -> bool:
    if a.reached != b.reached:
        return a.reached
    if not a.reached:
        return a.precision > b.precision
    return (a.coverage, a.precision) > (b.coverage, b.precision)


@dataclass(frozen=True)
class Reliability:
    """Equal-width confidence bins for a reliability diagram.

    Attributes:
        edges: float64 ``(bins + 1,)`` from 0 to 1.
        count: int ``(bins,)`` rows per bin (a confidence of exactly 1.0 is in the last bin).
        confidence: float64 ``(bins,)`` mean confidence per bin (``nan`` when empty).
        accuracy: float64 ``(bins,)`` fraction right per bin (``nan`` when empty).
        ece: expected calibration error, ``sum(count / n * |accuracy - confidence|)``.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Reliability:
    """Reliability bins and expected calibration error of top-1 confidences.

    Args:
        confidence: top-1 probability per row, in ``[0, 1]``, ``(n,)``.
        correct: bool ``(n,)``.
        bins: number of equal-width bins over ``[0, 1]``.

    Returns:
        The :class:`Reliability`.

    Raises:
        ValueError: no rows, a confidence outside ``[0, 1]`` or ``bins < 1``.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if not len(confidence) or bins < 1:
        raise ValueError("reliability needs rows and at least one bin")
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("confidences must be in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct, bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float((count * gaps).sum() / len(confidence))
    return Reliability(edges, count, mean_conf, accuracy, ece)
