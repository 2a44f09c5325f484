"""The job over many nights: ``python -m batch history`` and ``results/index.html``.

Reads the ledger's ``runs`` table (start, end, exit code) and every run's ``summary.json``; prints
a table of the last N runs and writes ``<results>/index.html`` with trend plots (``trends.png``:
volume, category mix, uncertain rate, mean confidence, drift PSI) and a link to each run's own
``report.html``. The job calls :func:`refresh_index` at the end of every run; nothing here writes
the ledger.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batch.reports import HTML_NAME, STAGING_PREFIX, SUMMARY_NAME, atomic_write

log = logging.getLogger("batch")

INDEX_NAME = "index.html"
TRENDS_NAME = "trends.png"
LEDGER_NAME = "ledger.sqlite"
UNCERTAIN = "_uncertain"
_RUN_ID_TIME = "%Y%m%dT%H%M%SZ"
PLOTTED_RUNS = 90
"""Runs shown in ``trends.png`` (the newest); the index table lists every run."""


@dataclass
class RunRow:
    """One run as the history shows it.

    Attributes:
        run_id: the run.
        started_at: start, UTC (from the ledger, else from the run id).
        finished_at: end of its reports, UTC, or None.
        photos: files in its report.
        filed: photos filed per category (``_uncertain`` not included).
        uncertain: photos filed under ``_uncertain``.
        uncertain_by_reason: ``_uncertain`` photos per abstain reason, when the summary has them.
        quarantined: files quarantined.
        left: files left in incoming for a later run.
        mean_confidence: mean top-1 confidence, or None.
        duration_seconds: wall time.
        images_per_second: images answered per second.
        exit_code: the run's exit code, or None (killed before its end).
        model_versions: versions that answered.
        drift: the summary's drift status (``ok``, ``drift``, ...) or None.
        drift_psi: ``{"category_mix": psi, "confidence": psi}`` where computed.
        dry_run: whether it moved nothing.
        report: path of its ``report.html`` relative to the results folder, or None.
    """

    run_id: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    photos: int = 0
    filed: dict[str, int] = field(default_factory=dict)
    uncertain: int = 0
    uncertain_by_reason: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    left: int = 0
    mean_confidence: float | None = None
    duration_seconds: float | None = None
    images_per_second: float | None = None
    exit_code: int | None = None
    model_versions: list[int] = field(default_factory=list)
    drift: str | None = None
    drift_psi: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False
    report: str | None = None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time_from_run_id(run_id: str) -> datetime | None:
    try:
        return datetime.strptime(run_id.split("-")[0], _RUN_ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _ledger_runs(results: Path) -> dict[str, dict[str, Any]]:
    path = results / LEDGER_NAME
    if not path.is_file():
        return {}
    db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return {r["run_id"]: dict(r) for r in db.execute("SELECT * FROM runs")}
    finally:
        db.close()


def _uncertain_reasons(summary: dict[str, Any]) -> dict[str, int]:
    """Abstain reasons of ``_uncertain`` photos, under whichever key the summary uses."""
    for key in ("uncertain_by_reason", "counts_by_abstain_reason", "abstain_reasons"):
        value = summary.get(key)
        if isinstance(value, dict):
            return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float)}
    return {}


def _from_summary(row: RunRow, summary: dict[str, Any]) -> None:
    statuses = summary.get("counts_by_status") or {}
    categories = dict(summary.get("counts_by_category") or {})
    row.photos = int(summary.get("files") or 0)
    row.uncertain = int(categories.pop(UNCERTAIN, 0))
    row.filed = {str(k): int(v) for k, v in categories.items()}
    row.uncertain_by_reason = _uncertain_reasons(summary)
    row.quarantined = int(statuses.get("quarantined", 0) + statuses.get("would_quarantine", 0))
    row.left = int(statuses.get("left_in_incoming", 0))
    row.mean_confidence = (summary.get("confidence") or {}).get("mean")
    row.duration_seconds = summary.get("duration_seconds")
    row.images_per_second = summary.get("images_per_second")
    row.model_versions = list(summary.get("model_versions") or [])
    row.dry_run = bool(summary.get("dry_run"))
    if row.exit_code is None:
        row.exit_code = summary.get("exit_code")
    drift = summary.get("drift") or {}
    row.drift = drift.get("status")
    for aspect in ("category_mix", "confidence"):
        if isinstance(drift.get(aspect), dict) and drift[aspect].get("psi") is not None:
            row.drift_psi[aspect] = float(drift[aspect]["psi"])


def collect(results: Path) -> list[RunRow]:
    """Every run the results folder knows, oldest first.

    Args:
        results: the job's ``--results`` folder.

    Returns:
        One row per run found in the ledger or as ``<run_id>/summary.json`` (dry runs have no
        ledger entry; runs killed before their reports have no summary).
    """
    results = Path(results)
    ledger = _ledger_runs(results)
    run_ids = set(ledger)
    if results.is_dir():
        run_ids |= {
            p.parent.name
            for p in results.glob(f"*/{SUMMARY_NAME}")
            if not p.parent.name.startswith(STAGING_PREFIX)  # a killed run's unpublished reports
        }
    rows = []
    for run_id in run_ids:
        info = ledger.get(run_id, {})
        row = RunRow(
            run_id,
            started_at=_time(info.get("started_at")) or _time_from_run_id(run_id),
            finished_at=_time(info.get("finished_at")),
            exit_code=info.get("exit_code"),
        )
        summary_path = results / run_id / SUMMARY_NAME
        if summary_path.is_file():
            try:
                _from_summary(row, json.loads(summary_path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("history: cannot read %s: %s", summary_path, exc)
        if (results / run_id / HTML_NAME).is_file():
            row.report = f"{run_id}/{HTML_NAME}"
        rows.append(row)
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: (r.started_at or epoch, r.run_id))


def table(rows: Sequence[RunRow]):
    """The history as a pandas DataFrame, one row per run (columns as printed).

    Args:
        rows: from :func:`collect`.

    Returns:
        Columns ``run_id, started, photos, <category>..., uncertain, quarantined, left,
        mean_conf, duration_s, images_s, exit, model, drift``.
    """
    import pandas as pd

    categories = sorted({c for r in rows for c in r.filed})
    records = []
    for r in rows:
        record: dict[str, Any] = {
            "run_id": r.run_id + (" (dry)" if r.dry_run else ""),
            "started": r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "",
            "photos": r.photos,
        }
        record.update({c: r.filed.get(c, 0) for c in categories})
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(r.uncertain_by_reason.items()))
        record["uncertain"] = f"{r.uncertain} ({reasons})" if reasons else r.uncertain
        record["quarantined"] = r.quarantined
        record["left"] = r.left
        record["mean_conf"] = r.mean_confidence
        record["duration_s"] = r.duration_seconds
        record["images_s"] = r.images_per_second
        record["exit"] = "" if r.exit_code is None else r.exit_code
        record["model"] = ",".join(str(v) for v in r.model_versions)
        record["drift"] = r.drift or ""
        records.append(record)
    return pd.DataFrame.from_records(records)


def _trends_png(rows: Sequence[RunRow]) -> bytes:
    from matplotlib.figure import Figure

    x = list(range(len(rows)))
    labels = [r.started_at.strftime("%m-%d %H:%M") if r.started_at else r.run_id for r in rows]
    fig = Figure(figsize=(10, 12), dpi=90)
    axes = fig.subplots(5, 1, sharex=True)
    axes[0].bar(x, [r.photos for r in rows], color="#4878a8")
    axes[0].set_ylabel("photos")
    axes[0].set_title("Volume per run")
    categories = sorted({c for r in rows for c in r.filed} | {UNCERTAIN})
    bottom = [0.0] * len(rows)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, cat in enumerate(categories):
        shares = [
            (r.uncertain if cat == UNCERTAIN else r.filed.get(cat, 0))
            / max(sum(r.filed.values()) + r.uncertain, 1)
            for r in rows
        ]
        axes[1].bar(x, shares, bottom=bottom, label=cat.lstrip("_"), color=cmap(i % 20))
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    axes[1].set_ylabel("share")
    axes[1].set_title("Category mix")
    axes[1].legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.05))
    rate = [r.uncertain / max(sum(r.filed.values()) + r.uncertain, 1) for r in rows]
    axes[2].plot(x, rate, marker="o", color="#c44e52")
    axes[2].set_ylabel("share")
    axes[2].set_title("Uncertain rate")
    conf = [r.mean_confidence if r.mean_confidence is not None else float("nan") for r in rows]
    axes[3].plot(x, conf, marker="o", color="#55a868")
    axes[3].set_ylabel("mean top-1")
    axes[3].set_title("Confidence")
    for aspect, color in (("category_mix", "#8172b2"), ("confidence", "#ccb974")):
        psi = [r.drift_psi.get(aspect, float("nan")) for r in rows]
        axes[4].plot(x, psi, marker="o", label=aspect, color=color)
    flagged = [i for i, r in enumerate(rows) if r.drift == "drift"]
    if flagged:
        top = [max(rows[i].drift_psi.values(), default=0.0) for i in flagged]
        axes[4].scatter(flagged, top, marker="x", s=80, color="#c44e52", label="flagged", zorder=3)
    axes[4].set_ylabel("PSI")
    axes[4].set_title("Drift against the trailing nights")
    axes[4].legend(fontsize=7)
    axes[4].set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _index_html(rows: Sequence[RunRow], has_plot: bool) -> str:
    body = []
    for r in reversed(rows):
        name = html.escape(r.run_id)
        link = f'<a href="{html.escape(r.report)}">{name}</a>' if r.report else name
        drift = html.escape(r.drift or "")
        css = ' class="drift"' if r.drift == "drift" else ""
        conf = "" if r.mean_confidence is None else f"{r.mean_confidence:.3f}"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.uncertain_by_reason.items()))
        uncertain = f"{r.uncertain} ({html.escape(reasons)})" if reasons else str(r.uncertain)
        body.append(
            f"<tr{css}><td>{link}{' (dry run)' if r.dry_run else ''}</td>"
            f"<td>{r.started_at.isoformat(timespec='seconds') if r.started_at else ''}</td>"
            f"<td>{r.photos}</td><td>{sum(r.filed.values())}</td><td>{uncertain}</td>"
            f"<td>{r.quarantined}</td><td>{conf}</td>"
            f"<td>{'' if r.exit_code is None else r.exit_code}</td>"
            f"<td>{','.join(map(str, r.model_versions))}</td><td>{drift}</td></tr>"
        )
    plot = f'<img src="{TRENDS_NAME}" alt="trends over the runs">' if has_plot else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Nightly job history</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}} tr.drift{{background:#fde2e2}}</style>
</head><body>
<h1>Nightly job history ({len(rows)} runs)</h1>
<p>Generated {datetime.now(UTC).isoformat(timespec="seconds")} by the nightly job (or
<code>python -m batch history</code>). Plots: the last {PLOTTED_RUNS} runs at most. Each run
links to its own report.</p>
{plot}
<table><thead><tr><th>run</th><th>started (UTC)</th><th>photos</th><th>filed</th>
<th>uncertain</th><th>quarantined</th><th>mean confidence</th><th>exit</th><th>model</th>
<th>drift</th></tr></thead><tbody>
{"".join(body)}
</tbody></table>
</body></html>
"""


def refresh_index(results: Path) -> Path:
    """Writes ``<results>/index.html`` and ``trends.png`` from every run found (atomically).

    Args:
        results: the job's ``--results`` folder.

    Returns:
        The index path.
    """
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    rows = collect(results)
    if rows:
        atomic_write(results / TRENDS_NAME, _trends_png(rows[-PLOTTED_RUNS:]))
    atomic_write(results / INDEX_NAME, _index_html(rows, bool(rows)).encode())
    return results / INDEX_NAME


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m batch history``: print the last runs, refresh the index page.

    Args:
        argv: arguments after ``history``.

    Returns:
        0, or 2 when the results folder does not exist.
    """
    parser = argparse.ArgumentParser(
        prog="python -m batch history",
        description="Table of the nightly job's last runs (from the ledger and each run's "
        "summary.json) and RESULTS/index.html with trend plots linking every run's report.",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get("FASHION_BATCH_RESULTS") or "results/batch_results"),
        help="the job's results folder (env FASHION_BATCH_RESULTS; default %(default)s)",
    )
    parser.add_argument("--last", type=int, default=14, help="runs to print (default %(default)s)")
    parser.add_argument("--no-index", action="store_true", help="print only, write no HTML")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"no results folder {args.results}", file=sys.stderr)
        return 2
    rows = collect(args.results)
    frame = table(rows[-args.last :] if args.last > 0 else rows)
    print(frame.fillna("-").to_string(index=False) if len(frame) else "no runs yet")
    if not args.no_index:
        print(f"index: {refresh_index(args.results)}", file=sys.stderr)
    return 0
