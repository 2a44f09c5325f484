"""Publish a version safely: stage, verify, fsync, atomic rename.

TF Serving polls the base path and loads any new integer-named folder it sees, so a version folder
must appear complete or not at all. The export is assembled in ``<base>/.staging-<v>-<pid>``
(same filesystem, a name TF Serving ignores), verified there, flushed to disk (every file and
directory ``fsync``-ed), then renamed to ``<base>/<v>`` with ``os.rename`` (atomic on POSIX within
one filesystem), and the base directory is ``fsync``-ed so the rename itself survives a crash.
On any error, or Ctrl-C, the staging folder is removed; one left by a killed process is reported
and removed by the next export.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

import training.orientation  # noqa: F401  registers the orientation step for load_model
from contract import LABELS_FILENAME, RULE_FILENAME, folders, read_labels, write_labels
from export import layout, model_card, samples, signature, verify, warmup
from export import rule as rule_file
from export.errors import InputError, LayoutError, VerificationError
from export.rule import AbstainRule

log = logging.getLogger(__name__)

_REPO_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where.

    Attributes:
        model: the trained Keras model file (``.keras``).
        base_path: the model base path, e.g. ``models/fashion``; created if missing.
        version: the version to publish; ``None`` = highest existing + 1.
        artifacts: the training artifacts folder (``labels.txt``, ``training_run.json``,
            ``metrics.json``), or ``None``.
        labels: a labels file; defaults to ``<artifacts>/labels.txt``.
        model_name: the served model name; defaults to the base path's folder name.
        data_dir: data set for warm-up/comparison images; defaults to the test split of
            ``<artifacts>/manifest.csv``, then ``$FASHION_DATA_DIR`` (see :func:`samples.load`).
        command: the command line recorded in the model card.
        abstain_rule: the abstain rule file to build into the signature; ``None`` = the
            ``abstain_rule.json`` beside the model if there is one (see ``find_rule``).
        find_rule: look for ``abstain_rule.json`` beside the model when ``abstain_rule`` is
            ``None``; ``False`` exports the plain (version 1) signature.
    """

    model: Path
    base_path: Path
    version: int | None = None
    artifacts: Path | None = None
    labels: Path | None = None
    model_name: str | None = None
    data_dir: Path | None = None
    command: str = ""
    abstain_rule: Path | None = None
    find_rule: bool = True

    def rule_path(self) -> Path | None:
        """The rule file this export uses, or ``None`` for the plain signature."""
        if self.abstain_rule is not None:
            return self.abstain_rule
        beside = self.model.parent / RULE_FILENAME
        return beside if self.find_rule and beside.is_file() else None


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (inclusive) to stable storage.

    Args:
        root: a directory.

    Raises:
        OSError: a file cannot be opened or synced.
    """
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (new names, renames) to stable storage.

    Args:
        directory: the directory.

    Raises:
        OSError: it cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale_staging(base_path: Path) -> list[Path]:
    """Remove staging folders left by exports that died (see :func:`layout.stale_staging`).

    Args:
        base_path: the model base path.

    Returns:
        The folders removed (each is also logged as a warning).
    """
    removed = []
    for stale in layout.stale_staging(layout.scan(base_path)):
        log.warning(
            "removing stale staging folder %s (export of version %d by process %d, which is gone)",
            stale.path,
            stale.version,
            stale.pid,
        )
        shutil.rmtree(stale.path)
        removed.append(stale.path)
    if removed:
        fsync_dir(base_path)
    return removed


def _load_inputs(request: ExportRequest) -> tuple[keras.Model, list[str], AbstainRule | None]:
    try:
        model = keras.models.load_model(request.model, compile=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the Keras model {request.model}: {exc}") from exc
    labels_path = request.labels or (
        request.artifacts / LABELS_FILENAME if request.artifacts else None
    )
    if labels_path is None:
        raise InputError("no labels: pass --labels or --artifacts with a labels.txt")
    rule_path = request.rule_path()
    try:
        labels = read_labels(labels_path)
        folders.check_labels(labels)  # the nightly job files each label under its own folder
        rule = rule_file.read(rule_path) if rule_path is not None else None
        signature.input_size(model)
        width = signature.num_outputs(model)
        if rule is None and len(labels) != width:
            raise ValueError(
                f"{labels_path} has {len(labels)} labels but the model outputs {width} classes"
            )
        if rule is not None and rule.model_width(len(labels)) != width:
            other = rule.other_class_index
            raise ValueError(
                f"{labels_path} has {len(labels)} labels and {rule_path} sets other_class_index "
                f"{other}, so the model should output {rule.model_width(len(labels))} columns, "
                f"but it outputs {width}"
            )
        if (
            rule is not None
            and rule.other_class_index is not None
            and rule.other_class_index >= width
        ):
            raise ValueError(
                f"{rule_path}: other_class_index {rule.other_class_index} is not one of the "
                f"model's {width} columns"
            )
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    if rule is not None:
        log.info("abstain rule %s: %s", rule_path, rule.as_kwargs())
    return model, labels, rule


def _write_version(
    request: ExportRequest,
    model: keras.Model,
    labels: list[str],
    rule: AbstainRule | None,
    version: int,
    staging: Path,
) -> None:
    size = signature.input_size(model)
    name = request.model_name or request.base_path.resolve().name
    manifest = request.artifacts / "manifest.csv" if request.artifacts else None
    sample = samples.load(max(warmup.BATCH_SIZES), size, request.data_dir, manifest=manifest)
    signature.save(model, labels, staging, rule)
    extra = staging / verify.ASSETS_EXTRA
    write_labels(labels, extra / LABELS_FILENAME)
    rule_path = request.rule_path()
    if rule_path is not None:
        shutil.copyfile(rule_path, extra / RULE_FILENAME)
    warmup.write(extra / warmup.FILENAME, warmup.build_requests(name, sample.images))
    try:
        card = model_card.build(
            name=name,
            version=version,
            labels=labels,
            input_size=size,
            artifacts=model_card.read_artifacts(request.artifacts),
            rule=rule,
            calibration=model_card.read_calibration(request.model.parent, request.artifacts),
            export_info={
                "command": request.command,
                "tensorflow_version": tf.__version__,
                "keras_version": keras.__version__,
                "python_version": sys.version.split()[0],
                "git_commit": model_card.git_commit(_REPO_DIR),
                "source_model": str(request.model),
                "source_model_sha256": model_card.sha256_of(request.model),
                "warmup": {
                    "batch_sizes": list(warmup.BATCH_SIZES),
                    "images": sample.source,
                    "files": list(sample.files),
                },
            },
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    model_card.write(card, extra / model_card.FILENAME)
    checks = verify.verify(staging, reference=model, samples=sample.images, as_version=version)
    for check in checks:
        log.info("verify %-14s %s  %s", check.name, "ok  " if check.ok else "FAIL", check.detail)
    if not verify.passed(checks):
        raise VerificationError([f"{c.name}: {c.detail}" for c in checks if not c.ok])


def publish(request: ExportRequest) -> Path:
    """Export the model as a new version of the base path.

    Args:
        request: see :class:`ExportRequest`.

    Returns:
        The published version folder ``<base_path>/<version>``.

    Raises:
        LayoutError: the base path layout is refused or the version exists (nothing written).
        InputError: the model, labels or artifacts are unusable (nothing written).
        VerificationError: the staged export failed a check (staging removed, nothing published).
        OSError: a filesystem error (staging removed).
    """
    base = request.base_path
    scanned = layout.scan(base)
    problems = scanned.problems()
    if problems:
        raise LayoutError(f"refusing to publish into {base}: " + "; ".join(problems))
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(base)
    version = request.version if request.version is not None else scanned.next_version()
    layout.check_publishable(layout.scan(base), version)
    model, labels, rule = _load_inputs(request)
    if request.artifacts is not None and not request.artifacts.is_dir():
        log.warning(
            "artifacts folder %s not found: the model card's training, data set and "
            "metrics fields will be null",
            request.artifacts,
        )

    staging = layout.staging_path(base, version)
    staging.mkdir()
    published = False
    try:
        _write_version(request, model, labels, rule, version, staging)
        fsync_tree(staging)
        target = base / str(version)
        layout.check_publishable(layout.scan(base), version)  # another export may have won
        os.rename(staging, target)  # atomic; fails if a non-empty target appeared meanwhile
        published = True
        fsync_dir(base)
    finally:
        if not published:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("published %s", target)
    return target
