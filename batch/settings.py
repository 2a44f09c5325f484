"""The nightly job's configuration: one typed, frozen dataclass built from flags and environment.

Precedence, per field: command-line flag > environment variable > default. Every field documents
its unit and default; :func:`parse_settings` is the only constructor the CLI uses, and
:meth:`BatchSettings.validate` checks the values. A flag or variable that does not parse, or a
value that cannot work, stops the job before it touches any file with one line naming it and exit
code :data:`EXIT_CONFIG` (78, sysexits' EX_CONFIG: fix the configuration); a gateway that is down
or another run holding the lock is :data:`EXIT_TEMPFAIL` (75, EX_TEMPFAIL: retry later).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildinfo import version_line

EXIT_OK = 0
"""Every file found was filed under a category (or ``_uncertain``)."""
EXIT_PARTIAL = 1
"""Some files were quarantined, or left in incoming for the next run."""
EXIT_TEMPFAIL = 75
"""Retry later (sysexits ``EX_TEMPFAIL``): the gateway never became healthy, or another run holds
the lock. No file was touched."""
EXIT_CONFIG = 78
"""Fix the configuration (sysexits ``EX_CONFIG``): a flag or environment value that does not parse
or cannot work, or the gateway refused the API key. No file was touched (an API key refused
mid-run leaves the unsent files in incoming)."""


class ConfigError(ValueError):
    """The settings cannot work (exit code 78). The one-line message names the flag or variable."""


@dataclass(frozen=True)
class BatchSettings:
    """Everything one run needs. Paths are resolved to absolute paths by :func:`parse_settings`.

    Attributes:
        incoming: folder scanned recursively for new images. Env ``FASHION_BATCH_INCOMING``;
            default ``data/incoming``.
        processed: filed images go to ``processed/<category>/`` and ``processed/_uncertain/``.
            Env ``FASHION_BATCH_PROCESSED``; default ``data/processed_batches``.
        quarantine: images the gateway rejects as input errors. Env ``FASHION_BATCH_QUARANTINE``;
            default ``data/quarantine``.
        results: per-run reports in ``results/<run_id>/`` and the SQLite ledger ``ledger.sqlite``.
            Env ``FASHION_BATCH_RESULTS``; default ``results/batch_results``.
        logs: one log file per run, ``batch-<run_id>.log``. Env ``FASHION_BATCH_LOGS``;
            default ``logs``.
        gateway: base URL of the gateway. Env ``FASHION_BATCH_GATEWAY``;
            default ``http://localhost:8080``.
        min_confidence: a plain top-1 probability (0..1) below which an image goes to
            ``_uncertain``, replacing the model version's own abstain rule.
            Env ``FASHION_BATCH_MIN_CONFIDENCE``; default none: each version's rule, and 0.5 for
            a version without one (:mod:`batch.decide`).
        concurrency: ``/predict_batch`` requests in flight at once (threads).
            Env ``FASHION_BATCH_CONCURRENCY``; default 2.
        chunk_size: images per ``/predict_batch`` request. Env ``FASHION_BATCH_CHUNK_SIZE``;
            default 16.
        health_timeout: seconds to wait for ``GET /health`` = 200 before giving up (exit 75,
            EX_TEMPFAIL). Env ``FASHION_BATCH_HEALTH_TIMEOUT``; default 60.
        request_timeout: seconds a single HTTP request may take (connect + read).
            Env ``FASHION_BATCH_REQUEST_TIMEOUT``; default 120.
        retries: extra attempts of one ``/predict_batch`` request after a 5xx, a connection error
            or a timeout. Env ``FASHION_BATCH_RETRIES``; default 3.
        retry_backoff: seconds before the first retry; doubled each retry, capped at 30 s.
            Env ``FASHION_BATCH_RETRY_BACKOFF``; default 1.0.
        settle_seconds: files modified less than this many seconds ago are still being written
            and are left for the next run. Env ``FASHION_BATCH_SETTLE_SECONDS``; default 10.
        dry_run: classify and report, but move nothing and write no ledger state.
            Env ``FASHION_BATCH_DRY_RUN`` (``1``/``true``); default off.
        api_key: value of the gateway's ``X-API-Key`` header, if the gateway requires one.
            Env ``FASHION_BATCH_API_KEY``, else the gateway's own ``GATEWAY_API_KEY`` (one
            secret for both in docker-compose); prefer env to the flag (keeps it out of ``ps``).
        progress_every: seconds between progress log lines when stderr is not a terminal.
            Env ``FASHION_BATCH_PROGRESS_EVERY``; default 10.
        metrics_textfile: Prometheus text file written (atomically) at the end of each run for
            node_exporter's textfile collector (:mod:`batch.metrics_textfile`).
            Env ``FASHION_BATCH_METRICS_TEXTFILE``; default none.
        models_dir: local model base path whose ``<version>/assets.extra/model_card.json`` the
            drift report compares with; unreadable = no comparison.
            Env ``FASHION_BATCH_MODELS_DIR``; default ``models/fashion``.
        drift_nights: trailing nights the drift check compares with (:mod:`batch.drift`).
            Env ``FASHION_BATCH_DRIFT_NIGHTS``; default 14.
    """

    incoming: Path = Path("data/incoming")
    processed: Path = Path("data/processed_batches")
    quarantine: Path = Path("data/quarantine")
    results: Path = Path("results/batch_results")
    logs: Path = Path("logs")
    gateway: str = "http://localhost:8080"
    min_confidence: float | None = None
    concurrency: int = 2
    chunk_size: int = 16
    health_timeout: float = 60.0
    request_timeout: float = 120.0
    retries: int = 3
    retry_backoff: float = 1.0
    settle_seconds: float = 10.0
    dry_run: bool = False
    api_key: str | None = field(default=None, repr=False)
    progress_every: float = 10.0
    metrics_textfile: Path | None = None
    models_dir: Path = Path("models/fashion")
    drift_nights: int = 14

    def validate(self) -> None:
        """Checks values and the folder layout.

        Raises:
            ConfigError: a number out of range, a gateway URL that is not http(s), an incoming
                folder that does not exist, or an output folder inside the incoming folder (the
                next scan would pick filed images up again).
        """
        for name, kind in _FIELD_TYPES.items():
            value = getattr(self, name)
            if kind is float and value is not None and not math.isfinite(value):
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a finite number, got {value}"
                )
            if kind is Path and value is not None and not str(value).strip():
                raise ConfigError(f"--{name.replace('_', '-')} must not be empty")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"--min-confidence must be within [0, 1], got {self.min_confidence}")
        for name in ("concurrency", "chunk_size", "drift_nights"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if self.retries < 0:
            raise ConfigError("--retries must be >= 0")
        for name in ("health_timeout", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0 seconds")
        if self.settle_seconds < 0 or self.retry_backoff < 0:
            raise ConfigError("--settle-seconds and --retry-backoff must be >= 0")
        if not self.gateway.startswith(("http://", "https://")):
            raise ConfigError(f"--gateway must be an http(s) URL, got {self.gateway!r}")
        if not self.incoming.is_dir():
            state = "is not a folder" if self.incoming.exists() else "does not exist"
            raise ConfigError(f"incoming folder {self.incoming} {state}")
        for name in ("processed", "quarantine", "results", "logs"):
            path = getattr(self, name)
            if path == self.incoming or path.is_relative_to(self.incoming):
                raise ConfigError(f"--{name} ({path}) must not be inside --incoming")
        if self.processed == self.quarantine:
            raise ConfigError("--processed and --quarantine must be different folders")
        for name in ("processed", "quarantine", "results", "logs", "models_dir"):
            path = getattr(self, name)
            if path.exists() and not path.is_dir():
                raise ConfigError(f"--{name.replace('_', '-')} ({path}) is a file, not a folder")
        if self.metrics_textfile is not None and self.metrics_textfile.is_dir():
            raise ConfigError(f"--metrics-textfile ({self.metrics_textfile}) is a folder")


_ENV_PREFIX = "FASHION_BATCH_"
_GATEWAY_KEY_ENV = "GATEWAY_API_KEY"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as :class:`ConfigError` (exit 78) instead of exit 2."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``python -m batch`` argument parser (``run`` sub-command), with the exit codes
    in its epilog."""
    parser = _Parser(
        prog="fashion-batch",
        description="Nightly job: classify the images in the incoming folder through the "
        "gateway and file each one under its category, with reports. Crash-safe: a SQLite "
        "ledger makes a rerun finish whatever a killed run left half done.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="process the incoming folder once",
        description="Process the incoming folder once. Each flag defaults to the environment "
        f"variable {_ENV_PREFIX}<FLAG NAME> (e.g. {_ENV_PREFIX}MIN_CONFIDENCE), then to the "
        "default shown.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_CODES_HELP,
    )
    d = BatchSettings()
    run.add_argument(
        "--incoming", type=Path, help=f"folder scanned recursively (default {d.incoming})"
    )
    run.add_argument(
        "--processed",
        type=Path,
        help="filed images go to PROCESSED/<category>/ and "
        f"PROCESSED/_uncertain/ (default {d.processed})",
    )
    run.add_argument(
        "--quarantine",
        type=Path,
        help="images rejected as not images, corrupt or "
        f"unsupported, with a .reason.json sidecar (default {d.quarantine})",
    )
    run.add_argument(
        "--results",
        type=Path,
        help=f"per-run CSV/JSON/HTML reports and the SQLite ledger (default {d.results})",
    )
    run.add_argument("--logs", type=Path, help=f"one log file per run (default {d.logs})")
    run.add_argument("--gateway", help=f"gateway base URL (default {d.gateway})")
    run.add_argument(
        "--min-confidence",
        type=float,
        help="a plain top-1 probability in [0, 1] below which an image goes to _uncertain, "
        "replacing the model version's abstain rule (default: the version's rule; 0.5 for a "
        "version without one)",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        help=f"/predict_batch requests in flight (default {d.concurrency})",
    )
    run.add_argument(
        "--chunk-size", type=int, help=f"images per /predict_batch request (default {d.chunk_size})"
    )
    run.add_argument(
        "--health-timeout",
        type=float,
        help="seconds to wait for GET /health = 200 "
        f"before exiting with code 75 (default {d.health_timeout:g})",
    )
    run.add_argument(
        "--request-timeout",
        type=float,
        help=f"seconds per HTTP request (default {d.request_timeout:g})",
    )
    run.add_argument(
        "--retries", type=int, help=f"retries of a request after 5xx/timeout (default {d.retries})"
    )
    run.add_argument(
        "--retry-backoff",
        type=float,
        help=f"seconds before the first retry, doubled each time (default {d.retry_backoff:g})",
    )
    run.add_argument(
        "--settle-seconds",
        type=float,
        help="skip files modified in the last N "
        f"seconds: still being written (default {d.settle_seconds:g})",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="classify and report what would happen; move nothing, keep no ledger state",
    )
    run.add_argument(
        "--api-key",
        help=f"X-API-Key for the gateway (prefer env {_ENV_PREFIX}"
        f"API_KEY or {_GATEWAY_KEY_ENV}: flags are visible in the process list)",
    )
    run.add_argument(
        "--progress-every",
        type=float,
        help="seconds between progress log lines "
        f"without a terminal (default {d.progress_every:g})",
    )
    run.add_argument(
        "--metrics-textfile",
        type=Path,
        help="write the run's metrics in Prometheus text format to this .prom file, "
        "atomically, for node_exporter's textfile collector (default: none)",
    )
    run.add_argument(
        "--models-dir",
        type=Path,
        help="local model base path; the drift report compares with the version's model card "
        f"when it is readable there (default {d.models_dir})",
    )
    run.add_argument(
        "--drift-nights",
        type=int,
        help=f"trailing nights the drift check compares with (default {d.drift_nights})",
    )
    sub.add_parser("history", help="table of the last runs; writes RESULTS/index.html (--help)")
    sub.add_parser("feedback", help="photos moved by hand -> feedback.csv (--help)")
    return parser


_EXIT_CODES_HELP = """exit codes:
  0   every file found was filed (under its category or _uncertain)
  1   some files were quarantined, or left in incoming for the next run (gateway/serving errors)
  75  retry later (EX_TEMPFAIL): the gateway never became healthy, or another run holds the
      lock (RESULTS/.batch.lock); no file was touched
  78  fix the configuration (EX_CONFIG): a flag or FASHION_BATCH_* value that does not parse or
      cannot work (the message names it), or the gateway refused the API key

test hook (not for production): FASHION_BATCH_FAILPOINT=<point>:<n> SIGKILLs the job the n-th
time it reaches <point> (see batch/failpoints.py)."""


def _version() -> str:
    return version_line("fashion-batch").replace("%", "%%")


def _coerce(name: str, raw: str, kind: type) -> object:
    if kind is bool:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(
                f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a boolean "
                "(use 1/0, true/false, yes/no or on/off)"
            )
        return word in _TRUE
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
        ) from exc


_FIELD_TYPES: dict[str, type] = {
    "incoming": Path,
    "processed": Path,
    "quarantine": Path,
    "results": Path,
    "logs": Path,
    "gateway": str,
    "min_confidence": float,
    "concurrency": int,
    "chunk_size": int,
    "health_timeout": float,
    "request_timeout": float,
    "retries": int,
    "retry_backoff": float,
    "settle_seconds": float,
    "dry_run": bool,
    "api_key": str,
    "progress_every": float,
    "metrics_textfile": Path,
    "models_dir": Path,
    "drift_nights": int,
}


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> BatchSettings:
    """Merges parsed flags over environment variables over defaults.

    Args:
        args: the parsed ``run`` namespace (unset flags are ``None``).
        env: environment mapping, usually ``os.environ``.

    Returns:
        Settings with every path made absolute (relative to the current directory).

    Raises:
        ConfigError: an environment value that does not parse as its type.
    """
    values: dict[str, object] = {}
    for name, kind in _FIELD_TYPES.items():
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
        elif (raw := env.get(_ENV_PREFIX + name.upper())) is not None and raw.strip() != "":
            values[name] = _coerce(name, raw, kind)
        elif name == "api_key" and env.get(_GATEWAY_KEY_ENV):
            values[name] = env[_GATEWAY_KEY_ENV]
    for name, kind in _FIELD_TYPES.items():
        if kind is Path and name in values:
            values[name] = Path(values[name])
    settings = BatchSettings(**values)
    absolute = {
        name: Path(os.path.abspath(getattr(settings, name)))
        for name, kind in _FIELD_TYPES.items()
        if kind is Path and getattr(settings, name) is not None
    }
    return BatchSettings(
        **{**settings.__dict__, **absolute, "gateway": settings.gateway.rstrip("/")}
    )


def parse_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> tuple[str, BatchSettings]:
    """Parses the command line.

    Args:
        argv: arguments after the program name (``None``: ``sys.argv[1:]``).
        env: environment mapping.

    Returns:
        ``(command, settings)``; settings are not yet validated.

    Raises:
        SystemExit: ``--help`` or ``--version`` (code 0).
        ConfigError: a flag or an environment value that does not parse.
    """
    args = build_parser().parse_args(argv)
    return args.command, settings_from(args, env)
