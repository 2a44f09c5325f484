"""Server configuration: which models to serve (ModelServerConfig), batching and monitoring options.

The three files are protobuf text format, parsed with the real message classes
(``ModelServerConfig`` from ``tensorflow-serving-api``, the other two from
:mod:`serving.config_schema`), so a file this server accepts is one ``tensorflow_model_server``
accepts, and a typo fails here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from serving.config_schema import BatchingParameters, MonitoringConfig
from serving_api.protos import model_server_config_pb2


class ConfigError(ValueError):
    """A config file that cannot be read or that TF Serving would refuse."""


@dataclass(frozen=True)
class VersionPolicy:
    """``FileSystemStoragePathSourceConfig.ServableVersionPolicy`` in short.

    Attributes:
        kind: ``"latest"``, ``"all"`` or ``"specific"``.
        num_versions: for ``latest``: how many of the highest versions to serve (>= 1).
        versions: for ``specific``: the version numbers to serve.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ModelConfig:
    """One model to serve.

    Attributes:
        name: the model name clients put in ``ModelSpec.name``.
        base_path: absolute folder with integer-named version folders.
        policy: which of the versions on disk to serve.
        labels: version label -> version number (``version_labels``).
    """

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching, from ``BatchingParameters``.

    Defaults when a field is absent are those of TF Serving's ``BasicBatchScheduler::Options``
    (``tensorflow_serving/batching/basic_batch_scheduler.h``), except that ``num_batch_threads``
    defaults to the CPU count.

    Attributes:
        max_batch_size: most rows in one model call.
        batch_timeout_micros: longest wait (microseconds) for a batch to fill.
        max_enqueued_batches: queued batches per queue before UNAVAILABLE.
        num_batch_threads: threads running batches.
        allowed_batch_sizes: increasing sizes a batch is padded up to (empty = no padding).
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class MonitoringOptions:
    """Prometheus exposition on the REST port (``MonitoringConfig.prometheus_config``).

    Attributes:
        enabled: whether the metrics path is served.
        path: URL path of the metrics; TF Serving's default is ``/monitoring/prometheus/metrics``.
    """

    enabled: bool = False
    path: str = "/monitoring/prometheus/metrics"


def _read(path: str | os.PathLike[str], message):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _policy(proto) -> VersionPolicy:
    which = proto.WhichOneof("policy_choice")
    if which is None or which == "latest":
        num = proto.latest.num_versions if which else 1
        if which and num < 1:
            raise ConfigError("model_version_policy.latest.num_versions must be >= 1")
        return VersionPolicy("latest", num_versions=max(1, num))
    if which == "all":
        return VersionPolicy("all")
    versions = frozenset(int(v) for v in proto.specific.versions)
    if not versions:
        raise ConfigError("model_version_policy.specific needs at least one version")
    return VersionPolicy("specific", versions=versions)


def load_model_server_config(path: str | os.PathLike[str]) -> list[ModelConfig]:
    """Read a ``--model_config_file``.

    Args:
        path: ModelServerConfig in text format with a ``model_config_list``.

    Returns:
        One :class:`ModelConfig` per ``config`` entry; relative ``base_path`` values are resolved
        against the current working directory, as TF Serving does.

    Raises:
        ConfigError: unreadable file, text-format error, ``custom_model_config``, a platform other
            than ``tensorflow``, duplicate or empty names, or a bad version policy.
    """
    return models_from_proto(_read(path, model_server_config_pb2.ModelServerConfig()), str(path))


def models_from_proto(proto, path: str = "config") -> list[ModelConfig]:
    """The models of a ``ModelServerConfig`` message (file or ``HandleReloadConfigRequest``).

    Args:
        proto: the message.
        path: where it came from, for error messages.

    Returns:
        One :class:`ModelConfig` per ``config`` entry (base paths made absolute).

    Raises:
        ConfigError: see :func:`load_model_server_config`.
    """
    if proto.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{path}: custom_model_config is not supported")
    models: list[ModelConfig] = []
    for entry in proto.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"{path}: every config needs a name and a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{path}: model {entry.name}: platform {entry.model_platform!r} "
                "is not supported (only 'tensorflow')"
            )
        if any(m.name == entry.name for m in models):
            raise ConfigError(f"{path}: model {entry.name} is configured twice")
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=os.path.abspath(entry.base_path),
                policy=_policy(entry.model_version_policy),
                labels={k: int(v) for k, v in entry.version_labels.items()},
            )
        )
    return models


def model_from_flags(name: str, base_path: str) -> ModelConfig:
    """The single model given by ``--model_name``/``--model_base_path`` (policy: latest 1)."""
    return ModelConfig(name=name, base_path=os.path.abspath(base_path))


def load_batching(path: str | os.PathLike[str] | None) -> BatchingOptions:
    """Read a ``--batching_parameters_file``.

    Args:
        path: BatchingParameters text file, or ``None``/empty for the defaults.

    Returns:
        The options, defaults filled in.

    Raises:
        ConfigError: unreadable or invalid file; non-positive sizes; ``allowed_batch_sizes`` not
            increasing or not ending at ``max_batch_size`` (TF Serving's rule, see the proto).
    """
    defaults = BatchingOptions()
    if not path:
        return defaults
    proto = _read(path, BatchingParameters())

    def value(name: str, default: int) -> int:
        return int(getattr(proto, name).value) if proto.HasField(name) else default

    options = BatchingOptions(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        allowed_batch_sizes=tuple(int(v) for v in proto.allowed_batch_sizes),
    )
    if min(options.max_batch_size, options.max_enqueued_batches, options.num_batch_threads) < 1:
        raise ConfigError(f"{path}: batch sizes, queue length and thread count must be >= 1")
    if options.batch_timeout_micros < 0:
        raise ConfigError(f"{path}: batch_timeout_micros must be >= 0")
    sizes = options.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != options.max_batch_size):
        raise ConfigError(f"{path}: allowed_batch_sizes must increase and end at max_batch_size")
    return options


def load_monitoring(path: str | os.PathLike[str] | None) -> MonitoringOptions:
    """Read a ``--monitoring_config_file`` (``None``/empty: monitoring off).

    Raises:
        ConfigError: unreadable or invalid file.
    """
    if not path:
        return MonitoringOptions()
    proto = _read(path, MonitoringConfig())
    prometheus = proto.prometheus_config
    return MonitoringOptions(
        enabled=prometheus.enable,
        path=prometheus.path or MonitoringOptions.path,
    )
