"""The server's Prometheus metrics (served on the REST port when monitoring is enabled).

Names are this server's own (``serving_*``), not TF Serving's ``:tensorflow:serving:*`` series, so
a dashboard never mistakes one server for the other. ``serving_model_runs_total`` against
``serving_requests_total`` shows how many Predict calls batching merged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from buildinfo.prometheus import add_standard_metrics


class Metrics:
    """Counters and histograms of one server process, in a private registry.

    Also registered: the standard ``process_*``, ``python_info`` and ``python_gc_*`` series and
    ``serving_build_info{version, git_commit, model_name}``, one sample per configured model.

    Attributes:
        model_names: called at each scrape for the configured model names (default: none); the
            server sets it to its model manager's ``model_names``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.model_names: Callable[[], Iterable[str]] = tuple
        add_standard_metrics(self.registry, "serving", lambda: self.model_names())
        self.requests = Counter(
            "serving_requests",
            "gRPC/REST API calls by model, API and status code",
            ["model_name", "api", "status"],
            registry=self.registry,
        )
        self.model_runs = Counter(
            "serving_model_runs",
            "Calls of a SavedModel signature function (merged batches count once)",
            ["model_name", "version"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serving_batch_size",
            "Rows per model run, padding included",
            ["model_name"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Predict latency inside the server, seconds",
            ["model_name", "api"],
            registry=self.registry,
        )
        self.queued_rows = Gauge(
            "serving_batch_queue_rows",
            "Rows waiting in batching queues",
            ["model_name"],
            registry=self.registry,
        )
        self.loads = Counter(
            "serving_version_loads",
            "Version load attempts by outcome",
            ["model_name", "outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)
