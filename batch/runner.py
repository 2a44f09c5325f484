"""One run of the nightly job: health, recovery, scan, classify, file, report.

Threads only do HTTP (``/predict_batch`` in chunks, at most ``concurrency`` at once); the ledger
and every file-system change stay on the main thread, in ledger order, so the crash-safety
argument in :mod:`batch.ledger` holds step by step. The order of a run:

1. validate settings (exit 78, EX_CONFIG), take the run lock (exit 75, EX_TEMPFAIL: another run
   holds it); nothing touched either way;
2. wait for ``GET /health`` = 200 (exit 75 after ``--health-timeout``, nothing touched);
3. recover: finish or undo interrupted moves; settle the reports of a crashed run;
4. scan incoming, hash each file, register it in the ledger;
5. file the files a previous run classified but did not file (no request);
6. send the rest in chunks; file each answer as it arrives;
7. write the reports (CSV, JSON, HTML), then record the run as finished.

Duplicate content is not deduplicated: two byte-identical files are two inputs and both are
filed (each under its own name); the sha256 in the report shows they are equal. The promise is
per file: none lost, none filed twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Event

from filelock import FileLock, Timeout

from batch import failpoints, filing, nightly, reports
from batch.decide import (
    DEFAULT_MIN_CONFIDENCE,
    UNCERTAIN_FOLDER,
    Decision,
    decide,
    folder_name,
)
from batch.gateway_client import (
    GatewayClient,
    GatewayUnavailableError,
    RejectedRequestError,
    TransientGatewayError,
)
from batch.ledger import FileRow, Ledger
from batch.scan import scan
from batch.settings import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TEMPFAIL,
    BatchSettings,
    ConfigError,
)

log = logging.getLogger("batch")

LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".batch.lock"
_AUTH_STATUSES = (401, 403)


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_id: e.g. ``20261129T020000Z-1a2b3c``.
        exit_code: 0, 1 or 2 (see :mod:`batch.settings`).
        report_dir: folder of this run's reports (None if the run stopped before reporting).
        counts: rows per report status.
        message: one line for the operator.
    """

    run_id: str
    exit_code: int
    report_dir: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""


@dataclass
class _ItemResult:
    row: FileRow
    decision: Decision
    model_version: int | None = None
    answered: bool = False


def new_run_id() -> str:
    """A sortable unique run id: UTC time plus 6 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class RunLockHeld(RuntimeError):
    """Another run holds the results folder's lock (exit 75: retry later)."""


@contextlib.contextmanager
def _run_lock(results: Path) -> Iterator[None]:
    """Exclusive lock on ``results/.batch.lock`` so two runs never share a ledger.

    ``filelock`` takes an OS lock that the OS drops when the process dies (``flock`` on POSIX,
    ``msvcrt.locking`` on Windows), so a killed run never leaves a stale lock behind.

    Raises:
        RunLockHeld: another run (on this machine or sharing the folder) holds the lock.
    """
    results.mkdir(parents=True, exist_ok=True)
    lock = FileLock(results / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise RunLockHeld(f"another batch run holds {results / LOCK_NAME}; retry later") from exc
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _run_logging(logs: Path, run_id: str) -> Iterator[Path]:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"batch-{run_id}.log"
    handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


class _Progress:
    """tqdm on a terminal, a log line every ``every`` seconds otherwise.

    Counts what happened to each image, not just that it was handled: e.g.
    ``progress: 300/300 handled: 72 filed, 0 quarantined, 228 left in incoming for retry``.
    """

    def __init__(self, total: int, every: float) -> None:
        self.total, self.done, self._every = total, 0, every
        self.counts = {"filed": 0, "quarantined": 0, "vanished": 0, "left": 0, "dry_run": 0}
        self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", desc="classify")

    def line(self) -> str:
        c = self.counts
        text = (
            f"{self.done}/{self.total} handled: {c['filed']} filed, {c['quarantined']} "
            f"quarantined, {c['left']} left in incoming for retry"
        )
        text += f", {c['vanished']} vanished" if c["vanished"] else ""
        return text + (f", {c['dry_run']} classified (dry run)" if c["dry_run"] else "")

    def advance(self, outcomes: list[str]) -> None:
        """Adds handled images, one outcome each: ``filed``, ``quarantined``, ``vanished`` or
        ``left`` (still in incoming: gateway failure or move failure), ``dry_run``."""
        for outcome in outcomes:
            self.counts[outcome] += 1
        self.done += len(outcomes)
        if self._bar is not None:
            self._bar.update(len(outcomes))
            self._bar.set_postfix_str(self.line().split(": ", 1)[1], refresh=False)
        elif time.monotonic() - self._last >= self._every or self.done == self.total:
            self._last = time.monotonic()
            log.info("progress: %s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Runner:
    """Executes one run. Create, call :meth:`run` once.

    Args:
        settings: validated settings.
        run_id: this run's id.
        client: gateway client (built from settings if None).
    """

    def __init__(
        self, settings: BatchSettings, run_id: str, client: GatewayClient | None = None
    ) -> None:
        self.s = settings
        self.run_id = run_id
        self.client = client or GatewayClient(
            settings.gateway,
            api_key=settings.api_key,
            timeout=settings.request_timeout,
            retries=settings.retries,
            backoff=settings.retry_backoff,
        )
        self.ledger: Ledger | None = None
        self.planned: dict[int, str] = {}  # dry run: row id -> destination it would get
        self.sent = 0
        self._gateway_down = Event()
        self._auth_failed = False

    # -- steps -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Steps 2-7 of the module docstring (the caller holds the lock).

        Returns:
            The run's result; exit code 75 (EX_TEMPFAIL) if the gateway never became healthy.
        """
        started = time.monotonic()
        try:
            health = self.client.wait_healthy(self.s.health_timeout)
        except GatewayUnavailableError as exc:
            log.error("%s; no file touched", exc)
            return RunResult(self.run_id, EXIT_TEMPFAIL, message=str(exc))
        log.info("gateway %s healthy: %s", self.client.base_url, json.dumps(health)[:300])
        ledger_path = ":memory:" if self.s.dry_run else self.s.results / LEDGER_NAME
        self.ledger = ledger = Ledger(ledger_path)
        try:
            # this run holds the lock, so a staging folder is a killed run's (dry runs included)
            for stale in reports.stale_staging_dirs(self.s.results):
                log.warning("removing %s: reports a killed run did not finish", stale)
                shutil.rmtree(stale, ignore_errors=True)
            self._settle_crashed_reports()
            ledger.begin_run(self.run_id)
            self._recover_moves()
            due = self._scan()
            for row in [r for r in due if r.state == "classified"]:
                log.info("filing %s classified by an earlier run (not re-sent)", row.source)
                self._file(row)
            self._classify_and_file([r for r in due if r.state == "discovered"])
            failpoints.reach("before_reports")
            rows = ledger.claim_for_report(self.run_id)
            exit_code = EXIT_CONFIG if self._auth_failed else _exit_code(rows, self.s.dry_run)
            report_dir = self.s.results / self.run_id
            ledger.set_report_path(self.run_id, str(report_dir / reports.CSV_NAME))
            table = reports.build_table(
                rows, self.run_id, dry_run=self.s.dry_run, planned=self.planned
            )
            drift = nightly.drift_of(self.s, self.run_id, table, self.s.results / LEDGER_NAME)
            counts = reports.write_reports(
                table,
                report_dir,
                run_id=self.run_id,
                duration=time.monotonic() - started,
                images_sent=self.sent,
                exit_code=exit_code,
                dry_run=self.s.dry_run,
                extra={"uncertain_rule": _uncertain_rule(self.s.min_confidence)}
                | ({"drift": drift} if drift else {}),
            )
            failpoints.reach("after_reports")
            ledger.finish_run(self.run_id, exit_code, str(report_dir / reports.CSV_NAME))
        finally:
            ledger.close()
        done = ", ".join(f"{k} {v}" for k, v in counts.items()) or "no files"
        message = f"run {self.run_id}: {done}; exit {exit_code}"
        log.info("%s; reports in %s", message, report_dir)
        return RunResult(self.run_id, exit_code, report_dir, counts, message)

    def _settle_crashed_reports(self) -> None:
        """Exactly-once reports: a crashed run's CSV exists -> its claims stand; else release."""
        assert self.ledger is not None
        for run_id, csv in self.ledger.unfinished_runs():
            if csv and Path(csv).is_file():
                self.ledger.confirm_reports(run_id)
            else:
                self.ledger.release_reports(run_id)
                log.warning(
                    "run %s ended without reports; the %d files it finished go to this run's "
                    "report (column finished_run names it)",
                    run_id,
                    self.ledger.unreported_finished_by(run_id),
                )

    def _recover_moves(self) -> None:
        assert self.ledger is not None
        for row in self.ledger.in_state("moving"):
            assert row.destination is not None
            outcome = filing.recover_move(Path(row.source), Path(row.destination), row.sha256)
            log.warning(
                "recovering interrupted move %s -> %s: %s",
                row.source,
                row.destination,
                outcome.value,
            )
            if outcome is filing.MoveOutcome.DONE:
                self._done(row)
            elif outcome is filing.MoveOutcome.NOT_MOVED:
                self.ledger.undo_move(row.id)
            else:
                self.ledger.finish(
                    row.id,
                    "vanished",
                    self.run_id,
                    error_code="vanished",
                    error_message="file missing from incoming and destination",
                )

    def _scan(self) -> list[FileRow]:
        """Registers what incoming holds; returns the active rows due this run."""
        assert self.ledger is not None
        found = scan(self.s.incoming, self.s.settle_seconds)
        log.info(
            "scan %s: %d images, %d still being written, %d ignored",
            self.s.incoming,
            len(found.files),
            len(found.too_recent),
            len(found.ignored),
        )
        for path in found.too_recent:
            log.info("skipped (modified < %g s ago): %s", self.s.settle_seconds, path)
        due: list[FileRow] = []
        seen: set[str] = set()
        # One transaction for the whole scan (one WAL sync, not one per photo): nothing has moved
        # yet, so a run killed here loses only registrations its successor's scan makes again.
        with self.ledger.transaction():
            for f in found.files:
                try:
                    sha = filing.sha256_file(f.path)
                except FileNotFoundError:
                    continue
                row = self.ledger.discover(str(f.path), sha, f.size_bytes, self.run_id)
                due.append(row)
                seen.add(row.source)
        for row in self.ledger.in_state("discovered", "classified"):
            if row.source not in seen and not os.path.lexists(row.source):
                log.warning("%s left incoming before it was filed", row.source)
                self.ledger.finish(
                    row.id,
                    "vanished",
                    self.run_id,
                    error_code="vanished",
                    error_message="removed from incoming by someone else",
                )
        return due

    # -- classification --------------------------------------------------------------------
    def _classify_and_file(self, rows: list[FileRow]) -> None:
        chunks = [rows[i : i + self.s.chunk_size] for i in range(0, len(rows), self.s.chunk_size)]
        progress = _Progress(len(rows), self.s.progress_every)
        log.info(
            "classifying %d images in %d chunks of up to %d (concurrency %d; a chunk the "
            "gateway refuses as too large is sent again in halves)",
            len(rows),
            len(chunks),
            self.s.chunk_size,
            self.s.concurrency,
        )
        with ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="predict") as pool:
            pending: set[Future] = set()
            queue = iter(chunks)
            for chunk in queue:  # keep at most `concurrency` chunks (their bytes) in memory
                pending.add(pool.submit(self._classify_chunk, chunk))
                if len(pending) >= self.s.concurrency:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    # Send the next chunk before filing this one: filing is ledger commits and
                    # fsyncs (~3 ms a photo), and the gateway should not sit idle meanwhile.
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(self._classify_chunk, nxt))
                    outcomes = []
                    for item in fut.result():
                        self.sent += item.answered
                        outcomes.append(self._apply(item))
                    progress.advance(outcomes)
        progress.close()

    def _classify_chunk(self, rows: list[FileRow]) -> list[_ItemResult]:
        """Worker thread: read, check, send. No ledger or file-system writes here."""
        if self._gateway_down.is_set():
            return [
                _ItemResult(
                    r,
                    Decision(
                        "retry",
                        error_code="gateway_unavailable",
                        error_message="gateway failed earlier in this run",
                    ),
                )
                for r in rows
            ]
        items: list[tuple[str, bytes]] = []
        sendable: list[FileRow] = []
        results: list[_ItemResult] = []
        for row in rows:
            try:
                data = Path(row.source).read_bytes()
            except OSError as exc:
                results.append(
                    _ItemResult(
                        row, Decision("retry", error_code="read_error", error_message=str(exc))
                    )
                )
                continue
            if hashlib.sha256(data).hexdigest() != row.sha256:
                results.append(
                    _ItemResult(
                        row,
                        Decision(
                            "retry",
                            error_code="changed",
                            error_message="content changed since scan",
                        ),
                    )
                )
                continue
            # the multipart file name must be UTF-8: undecodable bytes are sent as U+FFFD
            name = os.fsencode(Path(row.source).name).decode("utf-8", "replace")
            items.append((name, data))
            sendable.append(row)
        if sendable:
            results.extend(self._send(sendable, items))
        return results

    def _send(self, rows: list[FileRow], items: list[tuple[str, bytes]]) -> list[_ItemResult]:
        try:
            answer = self.client.predict_batch(
                items, top_k=3, should_stop=self._gateway_down.is_set
            )
        except TransientGatewayError as exc:
            self._gateway_down.set()
            log.error("gateway failed for %d images, they stay in incoming: %s", len(rows), exc)
            return [
                _ItemResult(r, Decision("retry", error_code=exc.code, error_message=str(exc)))
                for r in rows
            ]
        except RejectedRequestError as exc:
            if exc.status == 413 and len(rows) > 1:  # too many images / bytes: split
                half = len(rows) // 2
                return self._send(rows[:half], items[:half]) + self._send(rows[half:], items[half:])
            if exc.status == 413:
                return [
                    _ItemResult(
                        rows[0], Decision("quarantine", error_code=exc.code, error_message=str(exc))
                    )
                ]
            if exc.status in _AUTH_STATUSES:
                self._auth_failed = True
                self._gateway_down.set()
            log.error("gateway refused a request of %d images: %s", len(rows), exc)
            return [
                _ItemResult(r, Decision("retry", error_code=exc.code, error_message=str(exc)))
                for r in rows
            ]
        preds = sorted(answer.predictions, key=lambda p: p.get("index", 0))
        return [
            _ItemResult(r, decide(p, self.s.min_confidence), answer.model_version, True)
            for r, p in zip(rows, preds, strict=True)
        ]

    def _apply(self, item: _ItemResult) -> str:
        """Main thread: record one answer and file the file.

        Returns:
            What became of it: ``filed`` (category or uncertain), ``quarantined``, ``vanished``,
            ``left`` (in incoming for the next run) or ``dry_run`` (classified, not moved).
        """
        assert self.ledger is not None
        d, row = item.decision, item.row
        if d.outcome == "retry":
            log.warning("left in incoming: %s (%s: %s)", row.source, d.error_code, d.error_message)
            self.ledger.defer(row.id, d.error_code or "unknown", d.error_message or "", self.run_id)
            return "left"
        self.ledger.classify(
            row.id,
            outcome=d.outcome,
            category=d.category,
            confidence=d.confidence,
            top3=d.top3,
            model_version=item.model_version,
            error_code=d.error_code,
            error_message=d.error_message,
            run_id=self.run_id,
            abstain_reason=d.abstain_reason,
            known_probability=d.known_probability,
        )
        failpoints.reach("after_classify")
        self._file(self.ledger.get(row.id))
        state = self.ledger.get(row.id).state
        if self.s.dry_run and state == "classified":
            return "dry_run"
        return state if state in ("filed", "quarantined", "vanished") else "left"

    # -- filing ----------------------------------------------------------------------------
    def _folder(self, row: FileRow) -> Path:
        if row.outcome == "quarantine":
            return self.s.quarantine
        if row.outcome == "uncertain":
            return self.s.processed / UNCERTAIN_FOLDER
        return self.s.processed / folder_name(row.category or "")

    def _file(self, row: FileRow) -> None:
        """Moves a classified file to its folder, recording the destination first."""
        assert self.ledger is not None
        src = Path(row.source)
        if self.s.dry_run:
            self.planned[row.id] = str(filing.unique_destination(self._folder(row), src.name))
            return
        for _ in range(10):  # a name taken between planning and linking: plan again
            dest = filing.unique_destination(self._folder(row), src.name)
            self.ledger.start_move(row.id, str(dest))
            failpoints.reach("before_move")
            try:
                filing.move_file(src, dest, row.sha256)
            except OSError as exc:
                self.ledger.undo_move(row.id)  # move_file changed nothing
                if isinstance(exc, FileExistsError) and os.path.lexists(dest):
                    continue
                if not src.exists():
                    self.ledger.finish(
                        row.id,
                        "vanished",
                        self.run_id,
                        error_code="vanished",
                        error_message="removed from incoming before filing",
                    )
                    return
                log.error("could not move %s to %s (%s); it stays in incoming", src, dest, exc)
                self.ledger.add_note(row.id, f"move_failed: {exc}", self.run_id)
                return
            failpoints.reach("after_move_before_ledger")
            self._done(self.ledger.get(row.id))
            return
        self.ledger.add_note(row.id, "move_failed: no free destination name", self.run_id)

    def _done(self, row: FileRow) -> None:
        """The file is at ``row.destination``: write the quarantine sidecar, close the row."""
        assert self.ledger is not None and row.destination is not None
        if row.outcome == "quarantine":
            reports.write_sidecar(
                Path(row.destination),
                {
                    "original_path": filing.display_path(row.source),
                    "sha256": row.sha256,
                    "error_code": row.error_code,
                    "error_message": row.error_message,
                    "run_id": self.run_id,
                },
            )
            self.ledger.finish(row.id, "quarantined", self.run_id)
        else:
            self.ledger.finish(row.id, "filed", self.run_id)
        log.info("%s -> %s", row.source, row.destination)


def _uncertain_rule(min_confidence: float | None) -> str:
    """One line for the reports: which rule sent photos to ``_uncertain`` in this run."""
    if min_confidence is not None:
        return f"top-1 confidence < {min_confidence} (--min-confidence; the versions' rules unused)"
    return (
        "each model version's own abstain rule; top-1 confidence < "
        f"{DEFAULT_MIN_CONFIDENCE} for a version without one"
    )


def _exit_code(rows: list[FileRow], dry_run: bool) -> int:
    """0 if every reported row is (or, dry run, would be) filed; 1 otherwise."""
    for row in rows:
        if row.state in ("quarantined", "vanished", "discovered", "moving"):
            return EXIT_PARTIAL
        if row.state == "classified" and (not dry_run or row.outcome == "quarantine"):
            return EXIT_PARTIAL
    return EXIT_OK


def run(settings: BatchSettings, client: GatewayClient | None = None) -> RunResult:
    """Validates settings, takes the lock and logs to a per-run file, then runs once.

    Args:
        settings: parsed settings (validated here).
        client: optional gateway client (tests inject one).

    Returns:
        The run's result; ``exit_code`` 78 for bad configuration, 75 for a held lock or no
        gateway.
    """
    run_id = new_run_id()
    started = time.time()
    try:
        settings.validate()
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return RunResult(run_id, EXIT_CONFIG, message=f"bad configuration: {exc}")
    with _run_logging(settings.logs, run_id) as log_path:
        log.info("run %s starting (dry_run=%s, log %s)", run_id, settings.dry_run, log_path)
        try:
            with _run_lock(settings.results):
                result = Runner(settings, run_id, client).run()
                nightly.after_run(settings, result, started, LEDGER_NAME, refresh_index=True)
                return result
        except RunLockHeld as exc:
            log.error("%s", exc)
            result = RunResult(run_id, EXIT_TEMPFAIL, message=str(exc))
            nightly.after_run(settings, result, started, LEDGER_NAME, refresh_index=False)
            return result
