"""Drift of one night against the trailing nights: category mix and confidence distribution.

Two standard statistics per aspect, on counts (never on raw images):

- the **population stability index** ``PSI = sum((a_i - e_i) * ln(a_i / e_i))`` over the shares
  ``a`` (tonight) and ``e`` (baseline), a size of the shift (0.1 "moderate", 0.25 "large" by the
  usual reading);
- **Pearson's chi-square test of homogeneity** of the 2 x K table (tonight, pooled baseline),
  whose p-value says whether a shift that large is plausible from sampling alone, given how few
  photos tonight and the baseline hold.

A night is flagged for an aspect when both say so: ``p < alpha`` *and* ``PSI >= psi_min``. The
p-value keeps small nights from being flagged for noise (a 20-photo night drawn from the test
split's own mix has a median PSI near 0.3, more than the test and validation splits differ); the
PSI floor keeps very large nights from being flagged for shifts too small to matter. The
thresholds in :data:`THRESHOLDS` were chosen with ``python -m batch.drift_simulation`` (see its
docstring and batch/README.md): over simulated nights drawn from one mix, at most 1 % of nights
are flagged on either aspect.

Verdicts (``status``):
- ``ok`` / ``drift``: compared, flagged on no aspect / on at least one;
- ``insufficient_data``: fewer than ``min_photos`` predictions tonight, fewer than
  ``min_nights`` comparable trailing nights, or fewer than ``min_baseline_photos`` in them;
- ``new_baseline``: the night before used another model version; tonight starts its baseline.

The baseline is the trailing nights (default 14) with predictions and the same model version as
tonight, newest first, stopping at the first night of another version. A "night" is a completed,
reported run of the job. No I/O here except :func:`nights_from_ledger` (read-only SQLite).
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import chdtrc

UNCERTAIN = "_uncertain"
"""Cell of the category mix for photos filed under ``_uncertain`` (whatever the reason)."""

CONFIDENCE_EDGES: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
"""Bin edges of the top-1 confidence histogram (8 bins, the last one closed). Finer where the
release model's confidences lie: on the 372 test photos, 0.25-0.99 with median 0.87."""

PSI_FLOOR = 1e-4
"""Share used in place of 0 in the PSI's logarithm (a category absent on one side)."""

MIN_EXPECTED = 5.0
"""Cells where tonight's expected count (under homogeneity) is below this are pooled into one
cell before the chi-square test, the usual condition for its p-value to be trustworthy."""

MIN_POOLED_EXPECTED = 1.0
"""The pooled cell is kept when tonight expects at least this many photos in it (Cochran's
relaxed rule: no expected count below 1, few below 5), else dropped from the test. Keeping it
is what lets a night of only one rare category (all its photos land in the pooled cell) show."""


@dataclass(frozen=True)
class Thresholds:
    """When a night is compared and when it is flagged (see the module docstring).

    Attributes:
        nights: trailing nights in the baseline (at most).
        min_nights: fewer comparable trailing nights -> ``insufficient_data``.
        min_photos: fewer predictions tonight -> ``insufficient_data``.
        min_baseline_photos: fewer predictions over the baseline nights -> ``insufficient_data``.
        alpha: p-value of the chi-square test below which an aspect can be flagged (per aspect;
            two aspects are tested each night).
        psi_min: PSI at or above which an aspect can be flagged.
    """

    nights: int = 14
    min_nights: int = 2
    min_photos: int = 20
    min_baseline_photos: int = 40
    alpha: float = 0.002
    psi_min: float = 0.1


THRESHOLDS = Thresholds()
"""The thresholds in use; chosen by ``python -m batch.drift_simulation`` (batch/README.md)."""


@dataclass(frozen=True)
class Night:
    """What one night contributes to a drift comparison.

    Attributes:
        run_id: the run.
        model_version: the model version that answered most of its photos (None: no answer).
        mix: photos filed per category, with :data:`UNCERTAIN` for ``_uncertain``.
        predicted: top-1 label of every predicted photo (filed or uncertain), for the model
            card comparison.
        confidence: counts per bin of :data:`CONFIDENCE_EDGES` (length ``len(edges) - 1``).
    """

    run_id: str
    model_version: int | None
    mix: dict[str, int] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)
    confidence: tuple[int, ...] = ()

    @property
    def photos(self) -> int:
        """Predicted photos (filed under a category or ``_uncertain``)."""
        return sum(self.mix.values())


def confidence_bins(confidences: Iterable[float]) -> tuple[int, ...]:
    """Histogram of top-1 confidences over :data:`CONFIDENCE_EDGES`.

    Args:
        confidences: probabilities in [0, 1].

    Returns:
        One count per bin (8); 1.0 falls in the last bin.
    """
    values = np.clip(np.asarray(list(confidences), dtype=np.float64), 0.0, 1.0)
    counts, _ = np.histogram(values, bins=np.asarray(CONFIDENCE_EDGES))
    return tuple(int(c) for c in counts)


def make_night(
    run_id: str,
    rows: Iterable[tuple[str | None, str | None, float | None, int | None]],
) -> Night:
    """Builds a night from its predicted photos.

    Args:
        run_id: the run.
        rows: one ``(outcome, category, confidence, model_version)`` per photo; ``outcome`` is
            ``category`` or ``uncertain`` (other rows are ignored), ``category`` the top-1 label.

    Returns:
        The night's counts.
    """
    mix: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    confidences = []
    for outcome, category, confidence, version in rows:
        if outcome not in ("category", "uncertain"):
            continue
        mix[UNCERTAIN if outcome == "uncertain" else str(category)] += 1
        if category:
            predicted[str(category)] += 1
        if confidence is not None and not math.isnan(confidence):
            confidences.append(confidence)
        if version is not None:
            versions[int(version)] += 1
    version = versions.most_common(1)[0][0] if versions else None
    return Night(run_id, version, dict(mix), dict(predicted), confidence_bins(confidences))


_REPORT_OUTCOMES = {
    "filed": "category",
    "would_file": "category",
    "uncertain": "uncertain",
    "would_be_uncertain": "uncertain",
}


def night_from_report(run_id: str, table: Any) -> Night:
    """Builds tonight's night from the run's report table.

    Args:
        run_id: the run.
        table: the pandas frame of :func:`batch.reports.build_table` (``status``, ``category``,
            ``confidence``, ``model_version`` columns); a dry run's ``would_*`` rows count.

    Returns:
        The night's counts.
    """
    rows = []
    for status, category, confidence, version in zip(
        table["status"], table["category"], table["confidence"], table["model_version"], strict=True
    ):
        version = None if version is None or str(version) in ("<NA>", "nan") else int(version)
        conf = None if confidence is None or math.isnan(confidence) else float(confidence)
        rows.append((_REPORT_OUTCOMES.get(status), category or None, conf, version))
    return make_night(run_id, rows)


def to_html(result: Mapping[str, Any]) -> str:
    """The drift section of a run's HTML report.

    Args:
        result: from :func:`assess`.

    Returns:
        An HTML fragment (heading, verdict, one table row per aspect, the model card line).
    """
    import html

    rows = []
    for aspect in ("category_mix", "confidence"):
        r = result.get(aspect)
        if r:
            flag = "<b>flagged</b>" if r["flagged"] else "no"
            rows.append(
                f"<tr><td>{aspect}</td><td>{r['psi']:.4f}</td><td>{r['p_value']:.4g}</td>"
                f"<td>{flag}</td></tr>"
            )
    t = result.get("thresholds") or {}
    base = result.get("baseline") or {}
    card = result.get("model_card")
    card_line = (
        f"<p>Against the model card's validation split (reported, never flagged): PSI "
        f"{card['validation_mix_psi']:.4f}, p {card['validation_mix_p_value']:.4g}; test "
        f"accuracy {card['test_accuracy']}.</p>"
        if card
        else ""
    )
    table = (
        "<table><tr><th>aspect</th><th>PSI</th><th>chi-square p</th><th>flagged</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else ""
    )
    return (
        f"<h2>Drift: {html.escape(str(result.get('status')))}</h2>"
        f"<p>{html.escape(str(result.get('reason') or ''))}. Baseline: {base.get('nights', 0)} "
        f"nights, {base.get('photos', 0)} photos, model version "
        f"{result.get('model_version')}. Flag when p &lt; {t.get('alpha')} and PSI &ge; "
        f"{t.get('psi_min')}.</p>{table}{card_line}"
    )


def _aligned(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(a) | set(b))
    return (
        np.array([a.get(k, 0) for k in keys], dtype=np.float64),
        np.array([b.get(k, 0) for k in keys], dtype=np.float64),
    )


def psi(actual: Sequence[float] | np.ndarray, expected: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two count vectors over the same cells.

    Args:
        actual: counts (or shares) tonight, shape ``(K,)``.
        expected: counts (or shares) of the baseline, shape ``(K,)``.

    Returns:
        ``sum((a - e) * ln(a / e))`` over the shares, each share floored at
        :data:`PSI_FLOOR`; 0.0 for identical shares.

    Raises:
        ValueError: different lengths, or a side with no counts.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape or a.sum() <= 0 or e.sum() <= 0:
        raise ValueError("psi needs two non-empty count vectors of one length")
    a = np.maximum(a / a.sum(), PSI_FLOOR)
    e = np.maximum(e / e.sum(), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def homogeneity_p(
    actual: Sequence[float] | np.ndarray, expected: Sequence[float] | np.ndarray
) -> float:
    """p-value of Pearson's chi-square test that two count vectors come from one distribution.

    Cells where tonight's expected count is below :data:`MIN_EXPECTED` are pooled into one cell
    first (dropped if tonight expects fewer than :data:`MIN_POOLED_EXPECTED` photos in it), so
    sparse categories cannot fake a tiny p-value.

    Args:
        actual: counts tonight, shape ``(K,)``.
        expected: counts of the (pooled) baseline nights, shape ``(K,)``.

    Returns:
        The p-value in [0, 1]; 1.0 when fewer than two usable cells remain.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    total = a + e
    keep = total > 0
    a, e, total = a[keep], e[keep], total[keep]
    if a.sum() <= 0 or e.sum() <= 0:
        return 1.0
    share = a.sum() / total.sum()  # tonight's share of all photos in the table
    sparse = share * total < MIN_EXPECTED
    if sparse.any():
        pooled_a, pooled_e = a[sparse].sum(), e[sparse].sum()
        a, e = a[~sparse], e[~sparse]
        if share * (pooled_a + pooled_e) >= MIN_POOLED_EXPECTED:
            a, e = np.append(a, pooled_a), np.append(e, pooled_e)
    if a.size < 2 or a.sum() <= 0 or e.sum() <= 0:
        return 1.0
    # Pearson's statistic of the 2 x K table against the counts expected under one distribution
    # (row total x column total / grand total), K - 1 degrees of freedom, no continuity
    # correction: the same figure as scipy.stats.chi2_contingency(table, correction=False), whose
    # import alone cost the job 0.5-0.8 s a night; scipy.special's survival function is enough.
    table = np.vstack([a, e])
    expected_counts = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected_counts) ** 2 / expected_counts).sum())
    return float(chdtrc(a.size - 1, statistic))


def compare_counts(
    actual: Sequence[float] | np.ndarray,
    expected: Sequence[float] | np.ndarray,
    thresholds: Thresholds = THRESHOLDS,
) -> dict[str, Any]:
    """PSI, chi-square p-value and flag of one aspect.

    Args:
        actual: counts tonight.
        expected: counts of the baseline (same cells).
        thresholds: ``alpha`` and ``psi_min``.

    Returns:
        ``{"psi": float, "p_value": float, "flagged": bool}`` (rounded to 6 decimals).
    """
    value = psi(actual, expected)
    p = homogeneity_p(actual, expected)
    return {
        "psi": round(value, 6),
        "p_value": round(p, 6),
        "flagged": bool(p < thresholds.alpha and value >= thresholds.psi_min),
    }


def baseline_for(tonight: Night, earlier: Sequence[Night], nights: int) -> tuple[list[Night], str]:
    """The comparable trailing nights.

    Args:
        tonight: this night.
        earlier: earlier nights, newest first (nights without predictions are skipped).
        nights: most nights to take.

    Returns:
        ``(baseline nights newest first, note)``; the note is ``"model version A -> B"`` when
        the newest earlier night used another version (the baseline is then empty), else ``""``.
    """
    with_data = [n for n in earlier if n.photos > 0]
    if with_data and tonight.model_version is not None:
        previous = with_data[0].model_version
        if previous is not None and previous != tonight.model_version:
            return [], f"model version {previous} -> {tonight.model_version}"
    baseline = []
    for n in with_data:
        if n.model_version != tonight.model_version:
            break
        baseline.append(n)
        if len(baseline) >= nights:
            break
    return baseline, ""


def _sum_mix(nights: Iterable[Night], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for n in nights:
        total.update(getattr(n, key))
    return dict(total)


def assess(
    tonight: Night,
    earlier: Sequence[Night],
    thresholds: Thresholds = THRESHOLDS,
    model_card: Mapping[str, Any] | None = None,
    model_card_path: str | None = None,
) -> dict[str, Any]:
    """Tonight against the trailing nights: the ``drift`` object of ``summary.json``.

    Args:
        tonight: this night (see :func:`make_night`).
        earlier: earlier nights, newest first.
        thresholds: when to compare and flag.
        model_card: the version's parsed ``model_card.json``, if readable: its validation split's
            label counts are compared with tonight's predicted labels (reported, never flagged).
        model_card_path: where the card was read, for the report.

    Returns:
        ``status`` (``ok``, ``drift``, ``insufficient_data``, ``new_baseline``), ``reason``
        (one line), ``model_version``, ``photos``, ``baseline`` (``nights``, ``photos``,
        ``run_ids``), ``category_mix`` and ``confidence`` (each ``{"psi", "p_value",
        "flagged"}`` or None when a side is empty), ``flagged`` (aspect names), ``thresholds``
        and ``model_card`` (None, or ``{"path", "validation_mix_psi", "validation_mix_p_value",
        "test_accuracy"}``).
    """
    baseline, note = baseline_for(tonight, earlier, thresholds.nights)
    base_mix = _sum_mix(baseline, "mix")
    base_conf = np.sum([n.confidence for n in baseline], axis=0) if baseline else None
    base_photos = sum(n.photos for n in baseline)
    mix = conf = None
    if tonight.photos and base_photos:
        mix = compare_counts(*_aligned(tonight.mix, base_mix), thresholds)
        if sum(tonight.confidence) and base_conf is not None and base_conf.sum():
            conf = compare_counts(np.asarray(tonight.confidence), base_conf, thresholds)
    if note:
        status, reason = "new_baseline", f"{note}: this night starts a new baseline"
    elif tonight.photos < thresholds.min_photos:
        status = "insufficient_data"
        reason = f"{tonight.photos} photos tonight (< {thresholds.min_photos})"
    elif len(baseline) < thresholds.min_nights:
        status = "insufficient_data"
        reason = f"{len(baseline)} comparable earlier nights (< {thresholds.min_nights})"
    elif base_photos < thresholds.min_baseline_photos:
        status = "insufficient_data"
        reason = f"{base_photos} photos in the baseline (< {thresholds.min_baseline_photos})"
    else:
        status, reason = "ok", ""
    flagged = []
    if status == "ok":
        aspects = (("category_mix", mix), ("confidence", conf))
        flagged = [name for name, r in aspects if r and r["flagged"]]
        if flagged:
            status = "drift"
            reason = "drift in " + " and ".join(flagged) + f" against {len(baseline)} nights"
        else:
            reason = f"no drift against {len(baseline)} nights"
    if status not in ("ok", "drift"):  # not compared: no aspect is flagged
        for result in (mix, conf):
            if result is not None:
                result["flagged"] = False
    return {
        "status": status,
        "reason": reason,
        "model_version": tonight.model_version,
        "photos": tonight.photos,
        "baseline": {
            "nights": len(baseline),
            "photos": base_photos,
            "run_ids": [n.run_id for n in baseline],
        },
        "category_mix": mix,
        "confidence": conf,
        "flagged": flagged,
        "thresholds": asdict(thresholds),
        "model_card": _card_comparison(tonight, model_card, model_card_path),
    }


def _card_comparison(
    tonight: Night, card: Mapping[str, Any] | None, path: str | None
) -> dict[str, Any] | None:
    if not card or not tonight.predicted:
        return None
    validation = ((card.get("dataset") or {}).get("splits") or {}).get("validation") or {}
    validation = {str(k): int(v) for k, v in validation.items() if isinstance(v, int | float)}
    if not validation or not sum(validation.values()):
        return None
    actual, expected = _aligned(tonight.predicted, validation)
    return {
        "path": path,
        "validation_mix_psi": round(psi(actual, expected), 6),
        "validation_mix_p_value": round(homogeneity_p(actual, expected), 6),
        "test_accuracy": (card.get("metrics") or {}).get("accuracy"),
    }


def read_model_card(models_dir: Path | None, version: int | None) -> tuple[dict | None, str | None]:
    """The version's model card from a local models folder, if it can be read.

    Args:
        models_dir: the model base path (``models/fashion``), or None.
        version: the model version.

    Returns:
        ``(card, path)``, or ``(None, None)`` when there is no folder, version or readable card.
    """
    import json

    if models_dir is None or version is None:
        return None, None
    path = Path(models_dir) / str(version) / "assets.extra" / "model_card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return (card, str(path)) if isinstance(card, dict) else (None, None)


def nights_from_ledger(
    ledger_path: Path, exclude: str | None = None, limit: int = 60
) -> list[Night]:
    """Earlier nights, newest first, from the ledger (opened read-only).

    A night is a run whose reports completed (``runs.reports_done``); its photos are the rows it
    reported as filed (category or ``_uncertain``).

    Args:
        ledger_path: ``results/ledger.sqlite``; a missing file gives no nights.
        exclude: a run id to leave out (the current run).
        limit: most runs to read.

    Returns:
        Nights, newest first.
    """
    if not Path(ledger_path).is_file():
        return []
    db = sqlite3.connect(f"file:{Path(ledger_path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        runs = [
            r[0]
            for r in db.execute(
                "SELECT run_id FROM runs WHERE reports_done = 1 AND finished_at IS NOT NULL "
                "AND run_id IS NOT ? ORDER BY started_at DESC, run_id DESC LIMIT ?",
                (exclude, limit),
            )
        ]
        by_run: dict[str, list] = {run_id: [] for run_id in runs}
        marks = ",".join("?" * len(runs))
        for run_id, *row in db.execute(  # one scan of the table, not one per night
            "SELECT reported_run, outcome, category, confidence, model_version FROM files "
            f"WHERE state = 'filed' AND reported_run IN ({marks})",
            runs,
        ):
            by_run[run_id].append(row)
    finally:
        db.close()
    return [make_night(run_id, by_run[run_id]) for run_id in runs]
