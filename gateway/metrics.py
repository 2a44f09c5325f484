"""The gateway's Prometheus metrics (prometheus-client), one registry per app.

A registry per app keeps apps independent (tests create many). Under gunicorn with several
workers, each worker has its own registry and a scrape sees only the worker that answered. When
``PROMETHEUS_MULTIPROC_DIR`` is set (``gateway/gunicorn.conf.py`` sets it), prometheus-client
writes every worker's values to files in that folder and ``/metrics`` aggregates them with its
``MultiProcessCollector``; the gunicorn config marks exited workers dead.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from buildinfo.prometheus import add_standard_metrics

# Seconds. Decoding one photo takes milliseconds; a batch Predict call up to seconds.
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The metric families the gateway records.

    Args:
        registry: where to register; a new :class:`CollectorRegistry` if None.
        model_name: the model the gateway calls, a label of ``gateway_build_info``.

    Also registered: the standard ``process_*``, ``python_info`` and ``python_gc_*`` series and
    ``gateway_build_info{version, git_commit, model_name}`` (:mod:`buildinfo.prometheus`).

    Attributes:
        requests: ``gateway_requests_total{endpoint, method, status}``.
        request_seconds: ``gateway_request_duration_seconds{endpoint}``, whole request.
        decode_seconds: ``gateway_decode_duration_seconds``, one image bytes -> array.
        serving_seconds: ``gateway_serving_duration_seconds{method, status}``, one gRPC round trip.
        images: ``gateway_predicted_images_total{label}``, images per predicted (top-1) class.
        rejected: ``gateway_rejected_inputs_total{reason}``, requests or batch items refused,
            by error code.
        answered: ``gateway_model_version_responses_total{version}``, Predict responses by the
            model version that answered.
        cache_lookups: ``gateway_cache_lookups_total{result}``, images looked up in the
            prediction cache, ``hit`` or ``miss`` (a failing store counts as a miss).
        cache_errors: ``gateway_cache_errors_total{store, operation}``, failed cache store calls
            (each one answered without the cache).
    """

    def __init__(self, registry: CollectorRegistry | None = None, model_name: str = "") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._model_name = model_name
        add_standard_metrics(self.registry, "gateway", self._model_names)
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Whole HTTP request latency in seconds",
            ["endpoint"],
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "gateway_decode_duration_seconds",
            "Decode and resize of one image in seconds",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.serving_seconds = Histogram(
            "gateway_serving_duration_seconds",
            "gRPC round trip to TF Serving in seconds",
            ["method", "status"],
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "gateway_predicted_images", "Images by predicted (top-1) label", ["label"], registry=r
        )
        self.rejected = Counter(
            "gateway_rejected_inputs",
            "Rejected requests or items by reason",
            ["reason"],
            registry=r,
        )
        self.answered = Counter(
            "gateway_model_version_responses",
            "Predict responses by the model version that answered",
            ["version"],
            registry=r,
        )

        self.cache_lookups = Counter(
            "gateway_cache_lookups",
            "Images looked up in the prediction cache by result (hit or miss)",
            ["result"],
            registry=r,
        )
        self.cache_errors = Counter(
            "gateway_cache_errors",
            "Failed prediction cache calls (answered without the cache)",
            ["store", "operation"],
            registry=r,
        )

    def observe_cache_lookup(self, result: str, count: int) -> None:
        """Count ``count`` images looked up with ``result`` (the cache's ``on_lookup`` hook)."""
        self.cache_lookups.labels(result=result).inc(count)

    def observe_cache_error(self, store: str, operation: str) -> None:
        """Count one failed store call (the cache's ``on_error`` hook)."""
        self.cache_errors.labels(store=store, operation=operation).inc()

    def _model_names(self) -> list[str]:
        return [self._model_name] if self._model_name else []

    def observe_serving_call(self, method: str, seconds: float, status: str) -> None:
        """Record one gRPC round trip (the serving client's ``on_call`` hook)."""
        self.serving_seconds.labels(method=method, status=status).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of all metrics.

        Returns:
            ``(body, content_type)``; aggregated over gunicorn workers in multiprocess mode.
        """
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            # process_* of the worker that answers the scrape, and the build.
            add_standard_metrics(registry, "gateway", self._model_names)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
