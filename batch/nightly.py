"""The runner's hooks for what spans nights: drift before the reports, index and metrics after.

Each hook logs and swallows its own failure: a plot or a metrics file that cannot be written never
changes what the run did to the photos or its exit code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("batch")


def drift_of(settings: Any, run_id: str, table: Any, ledger_path: Path) -> dict[str, Any] | None:
    """Tonight's drift verdict (see :mod:`batch.drift`), logged.

    Args:
        settings: the run's :class:`batch.settings.BatchSettings` (``drift_nights``,
            ``models_dir``).
        run_id: this run.
        table: this run's report table (:func:`batch.reports.build_table`).
        ledger_path: the ledger, read for the earlier nights.

    Returns:
        The ``drift`` object for ``summary.json``, or None if it could not be computed.
    """
    from batch import drift

    try:
        tonight = drift.night_from_report(run_id, table)
        # runs without photos are skipped, so read more runs than nights
        limit = max(60, 4 * settings.drift_nights)
        earlier = drift.nights_from_ledger(ledger_path, exclude=run_id, limit=limit)
        card, card_path = drift.read_model_card(settings.models_dir, tonight.model_version)
        thresholds = dataclasses.replace(drift.THRESHOLDS, nights=settings.drift_nights)
        result = drift.assess(tonight, earlier, thresholds, card, card_path)
    except Exception as exc:  # noqa: BLE001 - drift is advice; the run goes on without it
        log.warning("drift not computed: %s", exc)
        return None
    parts = [
        f"{a} PSI {result[a]['psi']:.3f} p {result[a]['p_value']:.3g}"
        for a in ("category_mix", "confidence")
        if result[a]
    ]
    card_part = (
        f"; model card validation mix PSI {result['model_card']['validation_mix_psi']:.3f}"
        if result["model_card"]
        else ""
    )
    level = logging.WARNING if result["status"] in ("drift", "new_baseline") else logging.INFO
    log.log(
        level,
        "drift %s: %s (%s)%s",
        result["status"],
        result["reason"],
        ", ".join(parts) or "no comparison",
        card_part,
    )
    return result


def after_run(
    settings: Any, result: Any, started: float, ledger_name: str, *, refresh_index: bool
) -> None:
    """Refreshes ``index.html`` and writes ``--metrics-textfile`` (if set).

    Args:
        settings: the run's settings (``results``, ``metrics_textfile``).
        result: the :class:`batch.runner.RunResult`.
        started: Unix time the run started, seconds.
        ledger_name: file name of the ledger in ``settings.results``.
        refresh_index: False when another run holds the lock (it refreshes the index itself).
    """
    if refresh_index:
        try:
            from batch import history

            history.refresh_index(settings.results)
        except Exception as exc:  # noqa: BLE001
            log.warning("history index not refreshed: %s", exc)
    if settings.metrics_textfile is None:
        return
    try:
        from batch import metrics_textfile

        summary = None
        if result.report_dir is not None and (result.report_dir / "summary.json").is_file():
            summary = json.loads((result.report_dir / "summary.json").read_text(encoding="utf-8"))
        path = metrics_textfile.write(
            settings.metrics_textfile,
            started=started,
            ended=time.time(),
            exit_code=result.exit_code,
            summary=summary,
            last_success_at=metrics_textfile.last_success(settings.results / ledger_name),
        )
        log.info("metrics written to %s", path)
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics textfile %s not written: %s", settings.metrics_textfile, exc)
