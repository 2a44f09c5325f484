"""Servable lifecycle: which versions are loaded, loading new ones, unloading old ones.

Policy as TF Serving's default ``AvailabilityPreservingPolicy`` (``tensorflow_serving/core/``
``availability_preserving_policy.h``): a version the policy no longer wants is unloaded only once
an aspired version is AVAILABLE (or when the policy wants none at all), so a swap never leaves a
gap. A version that fails to load is marked END with its error, never served, and retried later:
at once when its folder changes (e.g. a copy finished), otherwise with a growing back-off.

Calls in flight keep the :class:`Handle` they took; unloading only drops the manager's reference,
so an old version finishes its calls before Python frees it (the reference count is the handle).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from serving.batching import Batcher
from serving.config import BatchingOptions, ModelConfig
from serving.errors import LoadError, invalid_argument, not_found
from serving.metrics import Metrics
from serving.versions import aspired_versions, versions_on_disk
from serving_api import protos

if TYPE_CHECKING:
    from serving.servable import Servable

log = logging.getLogger(__name__)

State = protos.get_model_status_pb2.ModelVersionStatus.State
"""``ModelVersionStatus.State``: START, LOADING, AVAILABLE, UNLOADING, END."""

MAX_RETRY_BACKOFF_SECONDS = 60.0
"""Longest wait before re-trying an unchanged folder that failed to load."""

NO_VERSIONS_WARNING_SECONDS = 60.0
"""Repeat the "No versions of servable" warning at most this often per model (TF Serving logs it
on every file-system poll, i.e. every second by default)."""


@dataclass
class Handle:
    """A loaded version as a request uses it (keeps the version alive while held).

    Attributes:
        servable: the loaded version.
        batcher: merges concurrent calls when batching is enabled, else None.
    """

    servable: Servable
    batcher: Batcher | None = None

    def run(self, call):
        """Run a prepared call, batched when enabled. See ``Servable.run`` for errors."""
        if self.batcher is not None:
            return self.batcher.submit(call)
        return self.servable.run(call)


@dataclass
class _Version:
    state: int = State.START
    error: str = ""
    handle: Handle | None = None
    fingerprint: tuple = ()
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, _Version] = field(default_factory=dict)
    warned_at: float | None = None  # last "no versions" warning (monotonic), None = versions seen


def _load_servable(name: str, version: int, path: str) -> Servable:
    from serving.servable import Servable  # TensorFlow is imported only when a model loads

    return Servable(name, version, path)


def folder_fingerprint(path: str) -> tuple:
    """Relative path, size and mtime of every file under a folder: changes when a copy moves on."""
    items = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(items))


class ModelManager:
    """Keeps the configured models' aspired versions loaded.

    Args:
        loader: builds a servable from (name, version, folder); raises ``LoadError``.
        batching: batching options, or None for unbatched calls.
        warmup: replay each version's warm-up requests before it becomes AVAILABLE.
        metrics: where load outcomes and batch sizes are counted.
        retry_backoff_seconds: wait before the first retry of an unchanged folder that failed;
            doubled per further failure, capped at ``MAX_RETRY_BACKOFF_SECONDS``.
    """

    def __init__(
        self,
        loader: Callable[[str, int, str], Servable] | None = None,
        batching: BatchingOptions | None = None,
        warmup: bool = True,
        metrics: Metrics | None = None,
        retry_backoff_seconds: float = 2.0,
    ) -> None:
        self._loader = loader or _load_servable
        self._batching = batching
        self._warmup = warmup
        self._metrics = metrics or Metrics()
        self._backoff = retry_backoff_seconds
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()

    # ----------------------------------------------------------------------------- configuration
    def configure(self, models: list[ModelConfig]) -> None:
        """Replace the set of models (a new or re-read config file). Takes effect on :meth:`poll`.

        Models no longer configured are unloaded now; a model whose base path changed is
        treated as a new model.
        """
        dropped: list[_Version] = []
        with self._lock:
            wanted = {m.name: m for m in models}
            for name in list(self._models):
                old = self._models[name]
                new = wanted.get(name)
                if new is None or new.base_path != old.config.base_path:
                    dropped.extend(old.versions.values())
                    del self._models[name]
            for name, config in wanted.items():
                if name in self._models:
                    self._models[name].config = config
                else:
                    self._models[name] = _Model(config)
        for version in dropped:
            self._unload(version)

    def model_names(self) -> list[str]:
        """Names of the configured models."""
        with self._lock:
            return sorted(self._models)

    # ----------------------------------------------------------------------------- polling
    def poll(self) -> None:
        """One reconciliation: scan every base path, load aspired versions, unload the rest.

        Loads run in the calling thread (one at a time); requests keep being served meanwhile.
        """
        with self._poll_lock:
            for name in self.model_names():
                self._poll_model(name)

    def _poll_model(self, name: str) -> None:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return
            config = model.config
        on_disk = versions_on_disk(config.base_path)
        aspired = aspired_versions(config.policy, on_disk)
        now = time.monotonic()
        self._warn_if_no_versions(model, bool(on_disk), now)
        for number in sorted(aspired, reverse=True):
            with self._lock:
                version = model.versions.setdefault(number, _Version())
                if version.state == State.AVAILABLE:
                    continue
            fingerprint = folder_fingerprint(on_disk[number])
            if version.failures and fingerprint == version.fingerprint and now < version.retry_at:
                continue
            self._load(model, number, on_disk[number], version, fingerprint)
        self._unload_unwanted(model, aspired)

    @staticmethod
    def _warn_if_no_versions(model: _Model, found: bool, now: float) -> None:
        """Warn that a model has nothing to serve: first poll, then once a minute until fixed."""
        if found:
            model.warned_at = None
            return
        if model.warned_at is not None and now - model.warned_at < NO_VERSIONS_WARNING_SECONDS:
            return
        model.warned_at = now
        name, base = model.config.name, model.config.base_path
        if os.path.isdir(base):
            why = "it holds no folder named by an integer version, e.g. %s"
            detail = os.path.join(base, "1")
        else:
            why = "the folder does not exist (relative paths are resolved against %s)"
            detail = os.getcwd()
        log.warning(
            "No versions of servable %s found under base path %s: " + why, name, base, detail
        )

    def _load(
        self, model: _Model, number: int, path: str, version: _Version, fingerprint: tuple
    ) -> None:
        name = model.config.name
        with self._lock:
            version.state = State.LOADING
            version.error = ""
        log.info("Loading servable: {name: %s version: %d} from %s", name, number, path)
        try:
            servable = self._loader(name, number, path)
            if self._warmup and hasattr(servable, "warm_up"):
                replayed = servable.warm_up()
                log.info("Warm-up of %s version %d: %d requests", name, number, replayed)
        except Exception as exc:  # LoadError, or anything a broken folder makes TF raise
            if not isinstance(exc, LoadError):
                exc = LoadError(f"{type(exc).__name__}: {exc}")
            with self._lock:
                version.state = State.END
                version.error = str(exc)
                version.failures += 1
                version.fingerprint = fingerprint
                version.retry_at = time.monotonic() + min(
                    self._backoff * 2 ** (version.failures - 1), MAX_RETRY_BACKOFF_SECONDS
                )
            self._metrics.loads.labels(name, "failed").inc()
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, number, exc)
            return
        batcher = None
        if self._batching is not None:
            runs = self._metrics.model_runs.labels(name, str(number))
            sizes = self._metrics.batch_size.labels(name)

            def on_batch(rows: int, _calls: int) -> None:
                runs.inc()
                sizes.observe(rows)

            batcher = Batcher(
                servable.run, self._batching, on_batch, self._metrics.queued_rows.labels(name).inc
            )
        with self._lock:
            version.handle = Handle(servable, batcher)
            version.state = State.AVAILABLE
            version.error = ""
            version.failures = 0
        self._metrics.loads.labels(name, "ok").inc()
        log.info("Successfully loaded servable version {name: %s version: %d}", name, number)

    def _unload_unwanted(self, model: _Model, aspired: set[int]) -> None:
        with self._lock:
            ready = any(
                model.versions.get(v) and model.versions[v].state == State.AVAILABLE
                for v in aspired
            )
            if aspired and not ready:
                return  # availability preserving: keep what serves until a replacement is up
            victims = [
                v
                for n, v in model.versions.items()
                if n not in aspired and v.state == State.AVAILABLE
            ]
            for victim in victims:
                victim.state = State.UNLOADING
        for victim in victims:
            self._unload(victim)

    def _unload(self, version: _Version) -> None:
        handle = version.handle
        with self._lock:
            version.handle = None
            version.state = State.END
        if handle is not None:
            log.info(
                "Unloading servable version {name: %s version: %d}",
                handle.servable.name,
                handle.servable.version,
            )
            if handle.batcher is not None:
                handle.batcher.close()

    def close(self) -> None:
        """Unload everything (server shutdown)."""
        self.configure([])

    # ----------------------------------------------------------------------------- requests
    def handle(self, name: str, version: int | None = None, label: str | None = None) -> Handle:
        """The loaded version a ModelSpec asks for.

        Args:
            name: model name.
            version: a specific version, or None.
            label: a version label from the config, or None. At most one of version/label.

        Returns:
            The handle: latest = the highest AVAILABLE version.

        Raises:
            ServingError: NOT_FOUND ``Servable not found for request: Latest(name)`` /
                ``Specific(name, v)`` (``basic_manager.cc``); INVALID_ARGUMENT ``Unrecognized
                servable version label: x`` (``server_core.cc``).
        """
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                if model is None or label not in model.config.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = model.config.labels[label]
            if version is not None:
                entry = model.versions.get(version) if model else None
                if entry is None or entry.handle is None:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
                return entry.handle
            available = (
                [n for n, v in model.versions.items() if v.handle is not None] if model else []
            )
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return model.versions[max(available)].handle

    def status(self, name: str, version: int | None = None) -> list[tuple[int, int, str]]:
        """Version states as GetModelStatus reports them.

        Args:
            name: model name.
            version: one version, or None for every version the server has seen.

        Returns:
            (version, State value, error message or "") sorted by version, highest first.

        Raises:
            ServingError: NOT_FOUND ``Could not find any versions of model x`` / ``Could not find
                version v of model x`` (``get_model_status_impl.cc``).
        """
        with self._lock:
            model = self._models.get(name)
            seen = {n: (v.state, v.error) for n, v in model.versions.items()} if model else {}
        if version is not None:
            if version not in seen:
                raise not_found(f"Could not find version {version} of model {name}")
            return [(version, *seen[version])]
        if not seen:
            raise not_found(f"Could not find any versions of model {name}")
        return [(n, *seen[n]) for n in sorted(seen, reverse=True)]
