"""gunicorn configuration of the gateway in production: ``gunicorn -c gateway/gunicorn.conf.py``.

gthread workers: a request spends most of its time waiting on TF Serving (gRPC releases the GIL)
or decoding in Pillow (which releases it too), so threads overlap well and a worker keeps one gRPC
channel for all its threads. Processes x threads bounds the requests in flight.

Timeouts are sized from the gateway's own settings: the slowest legitimate request is a full
``/predict_batch`` = ceil(MAX_BATCH_IMAGES / PREDICT_CHUNK_SIZE) Predict calls, each bounded by
SERVING_DEADLINE_SECONDS, plus decoding.

Metrics: ``PROMETHEUS_MULTIPROC_DIR`` is set (a fresh folder unless given) before any worker
imports prometheus-client, so ``/metrics`` aggregates all workers; exited workers are marked dead.

A bad setting (gateway or ``GUNICORN_*``) stops gunicorn before it boots: one line on stderr
naming the variable, exit status 2.
"""

from __future__ import annotations

import math
import os
import tempfile

from gateway.settings import Settings, exit_with_bad_setting

_settings = Settings.from_env_or_exit()


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        exit_with_bad_setting(f"{name}={raw!r} is not a valid int")
    if value <= 0:
        exit_with_bad_setting(f"{name} must be > 0, got {value}")
    return value


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-prometheus-")
_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]

wsgi_app = "gateway.app:create_app()"
bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:8080")
worker_class = "gthread"
# One process of 8 threads by default: the work is in Pillow and gRPC, which release the GIL, and
# each extra process costs ~50 MB PSS (a worker after a prediction, measured here). Raise
# GUNICORN_WORKERS on hosts with more cores.
workers = _positive_int("GUNICORN_WORKERS", 1)
threads = _positive_int("GUNICORN_THREADS", 8)

_chunks = math.ceil(_settings.max_batch_images / _settings.predict_chunk_size)
_slowest_request = _chunks * _settings.deadline_seconds + 10  # + decoding a full batch
timeout = int(_slowest_request + 30)
graceful_timeout = int(_slowest_request + 5)
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level.lower()


def on_starting(server: object) -> None:
    """Remove prometheus-client's files (``*.db``) of a previous run from the metrics folder, so
    old values are not summed into this run's; nothing else in the folder is touched."""
    os.makedirs(_METRICS_DIR, exist_ok=True)
    for name in os.listdir(_METRICS_DIR):
        path = os.path.join(_METRICS_DIR, name)
        if name.endswith(".db") and os.path.isfile(path):
            os.remove(path)


def child_exit(server: object, worker: object) -> None:
    """Tell prometheus-client a worker is gone (its live gauges stop counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
