"""``--metrics-textfile PATH``: the run's metrics for node_exporter's textfile collector.

Prometheus text format, written with ``prometheus_client.write_to_textfile`` (to
``PATH.<pid>.<thread>`` in the same folder, then renamed: the collector never reads half a file,
and ignores the temporary name because it does not end in ``.prom``). Every series is a gauge
describing the *last* run, except ``fashion_batch_last_success_timestamp_seconds``, which comes
from the ledger and so survives failed runs. "Success" means the run went through its incoming
folder and wrote its reports: exit code 0, or 1 (some files quarantined or left for the next run,
which the per-outcome series show).

Series (all gauges):

| name | labels | meaning |
|---|---|---|
| ``fashion_batch_last_run_start_timestamp_seconds`` | | Unix time the run started |
| ``fashion_batch_last_run_end_timestamp_seconds`` | | Unix time it ended |
| ``fashion_batch_last_success_timestamp_seconds`` | | end of the last successful run (or absent) |
| ``fashion_batch_last_run_exit_code`` | | the run's exit code |
| ``fashion_batch_last_run_duration_seconds`` | | wall time |
| ``fashion_batch_last_run_images_per_second`` | | images answered / duration |
| ``fashion_batch_last_run_photos`` | ``outcome`` | files per report status |
| ``fashion_batch_last_run_filed_photos`` | ``category`` | filed per category and ``_uncertain`` |
| ``fashion_batch_last_run_uncertain_photos`` | ``reason`` | ``_uncertain`` per abstain reason |
| ``fashion_batch_last_run_drift_psi`` | ``aspect`` | PSI against the trailing nights |
| ``fashion_batch_last_run_drift_p_value`` | ``aspect`` | chi-square p-value |
| ``fashion_batch_last_run_drift_flagged`` | ``aspect`` | 1 if the aspect was flagged |
| ``fashion_batch_last_run_drift_status`` | ``status`` | 1 for the run's verdict, 0 for the others |
| ``fashion_batch_last_run_model_version`` | | model version that answered most photos |
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

PREFIX = "fashion_batch_"
SUCCESS_EXIT_CODES = (0, 1)
"""Exit codes that count as a successful run (see the module docstring)."""
OUTCOMES = ("filed", "uncertain", "quarantined", "left_in_incoming", "vanished")
DRIFT_STATUSES = ("ok", "drift", "insufficient_data", "new_baseline")


def last_success(ledger_path: Path) -> float | None:
    """End of the last run with a success exit code, from the ledger (read-only).

    Args:
        ledger_path: ``results/ledger.sqlite`` (may be missing).

    Returns:
        Unix time in seconds, or None when no run succeeded yet.
    """
    if not Path(ledger_path).is_file():
        return None
    marks = ",".join("?" * len(SUCCESS_EXIT_CODES))
    db = sqlite3.connect(f"file:{Path(ledger_path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute(
            f"SELECT MAX(finished_at) FROM runs WHERE exit_code IN ({marks})", SUCCESS_EXIT_CODES
        ).fetchone()
    finally:
        db.close()
    return datetime.fromisoformat(row[0]).timestamp() if row and row[0] else None


def _gauge(registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()):
    return Gauge(PREFIX + name, doc, labels, registry=registry)


def build_registry(
    *,
    started: float,
    ended: float,
    exit_code: int,
    summary: dict[str, Any] | None,
    last_success_at: float | None,
) -> CollectorRegistry:
    """The run's metrics.

    Args:
        started: Unix time the run started, seconds.
        ended: Unix time it ended, seconds.
        exit_code: its exit code.
        summary: its ``summary.json`` content, or None when it stopped before reporting.
        last_success_at: Unix time of the last successful run's end, or None.

    Returns:
        A registry holding the series of the module docstring.
    """
    reg = CollectorRegistry(auto_describe=True)
    _gauge(reg, "last_run_start_timestamp_seconds", "Unix time the last run started.").set(started)
    _gauge(reg, "last_run_end_timestamp_seconds", "Unix time the last run ended.").set(ended)
    if last_success_at is not None:
        _gauge(
            reg,
            "last_success_timestamp_seconds",
            "Unix time the last successful run (exit code 0 or 1) ended.",
        ).set(last_success_at)
    _gauge(reg, "last_run_exit_code", "Exit code of the last run.").set(exit_code)
    summary = summary or {}
    duration = summary.get("duration_seconds", ended - started)
    _gauge(reg, "last_run_duration_seconds", "Wall time of the last run.").set(duration)
    if summary.get("images_per_second") is not None:
        _gauge(
            reg, "last_run_images_per_second", "Images answered per second in the last run."
        ).set(summary["images_per_second"])
    photos = _gauge(reg, "last_run_photos", "Files of the last run per outcome.", ("outcome",))
    statuses = summary.get("counts_by_status") or {}
    for outcome in OUTCOMES:
        photos.labels(outcome).set(statuses.get(outcome, 0))
    filed = _gauge(
        reg, "last_run_filed_photos", "Photos filed by the last run per category.", ("category",)
    )
    for category, n in sorted((summary.get("counts_by_category") or {}).items()):
        filed.labels(category).set(n)
    reasons = {}
    for key in ("uncertain_by_reason", "counts_by_abstain_reason", "abstain_reasons"):
        if isinstance(summary.get(key), dict):
            reasons = summary[key]
            break
    if reasons:
        by_reason = _gauge(
            reg,
            "last_run_uncertain_photos",
            "Photos the last run filed under _uncertain, per abstain reason.",
            ("reason",),
        )
        for reason, n in sorted(reasons.items()):
            by_reason.labels(reason).set(n)
    drift = summary.get("drift")
    if isinstance(drift, dict):
        psi = _gauge(reg, "last_run_drift_psi", "PSI against the trailing nights.", ("aspect",))
        p_value = _gauge(
            reg, "last_run_drift_p_value", "Chi-square p-value against them.", ("aspect",)
        )
        flagged = _gauge(reg, "last_run_drift_flagged", "1 if drift was flagged.", ("aspect",))
        for aspect in ("category_mix", "confidence"):
            result = drift.get(aspect)
            if isinstance(result, dict):
                psi.labels(aspect).set(result["psi"])
                p_value.labels(aspect).set(result["p_value"])
                flagged.labels(aspect).set(1 if result["flagged"] else 0)
        status = _gauge(
            reg, "last_run_drift_status", "1 for the drift verdict of the last run.", ("status",)
        )
        for name in DRIFT_STATUSES:
            status.labels(name).set(1 if drift.get("status") == name else 0)
    versions = summary.get("model_versions") or []
    version = (drift or {}).get("model_version") if isinstance(drift, dict) else None
    version = version if version is not None else (max(versions) if versions else None)
    if version is not None:
        _gauge(reg, "last_run_model_version", "Model version that answered the last run.").set(
            version
        )
    return reg


def write(path: Path, **kwargs: Any) -> Path:
    """Writes the metrics file atomically (folder created if missing).

    Args:
        path: the ``.prom`` file, e.g. ``/var/lib/node_exporter/textfile/fashion_batch.prom``.
        **kwargs: as :func:`build_registry`.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), build_registry(**kwargs))
    return path
