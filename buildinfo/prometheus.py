"""The standard process and Python metrics and a ``<prefix>_build_info`` gauge on a registry.

The gateway and the local model server keep private Prometheus registries (one per app or server),
which leave out prometheus-client's default collectors; this adds them back, so the memory figures
the README quotes can be watched (``process_resident_memory_bytes``), together with which build
answers. Needs ``prometheus-client`` (both components depend on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

from buildinfo import git_commit, version


class BuildInfoCollector(Collector):
    """``<prefix>_build_info{version, git_commit, model_name} 1``, one sample per model name.

    Args:
        prefix: metric name prefix, e.g. ``gateway`` or ``serving``.
        model_names: called at each scrape; the model names this process serves or calls.
    """

    def __init__(self, prefix: str, model_names: Callable[[], Iterable[str]]) -> None:
        self._name = f"{prefix}_build_info"
        self._model_names = model_names

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yields the one gauge family (value 1; the labels carry the information)."""
        family = GaugeMetricFamily(
            self._name,
            "Build of this process: package version and git commit, per model name; always 1",
            labels=["version", "git_commit", "model_name"],
        )
        for name in sorted(set(self._model_names())) or [""]:
            family.add_metric([version(), git_commit(), name], 1.0)
        yield family


def add_standard_metrics(
    registry: CollectorRegistry, prefix: str, model_names: Callable[[], Iterable[str]]
) -> None:
    """Register process, platform, garbage-collector and build-info collectors.

    Args:
        registry: a private registry.
        prefix: the build-info metric's prefix.
        model_names: see :class:`BuildInfoCollector`.

    Adds ``process_*`` (CPU seconds, resident and virtual memory in bytes, open file descriptors,
    start time; Linux), ``python_info``, ``python_gc_*`` and ``<prefix>_build_info``.
    """
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BuildInfoCollector(prefix, model_names))
