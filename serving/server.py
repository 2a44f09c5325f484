"""The model server process: flags -> configs -> manager -> gRPC and REST servers -> shutdown.

Start-up follows ``tensorflow_model_server``: models are loaded (first poll) before the ports open,
then a background thread re-scans base paths every ``--file_system_poll_wait_seconds`` and re-reads
``--model_config_file`` every ``--model_config_file_poll_wait_seconds`` (if > 0). SIGTERM or SIGINT:
stop accepting new calls, let calls in flight finish (grace period), unload, exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from serving import flags as flags_module
from serving.config import (
    ConfigError,
    ModelConfig,
    load_batching,
    load_model_server_config,
    load_monitoring,
    model_from_flags,
)
from serving.ports import PortError, check_free, host_port
from serving_api.memory import keep_large_buffers_on_heap

log = logging.getLogger("serving")

SHUTDOWN_GRACE_SECONDS = 30.0
"""How long calls in flight may take to finish after SIGTERM."""


def _configure_tensorflow(flags: flags_module.Flags) -> None:
    # Must run before TensorFlow creates its thread pools (before any op).
    import tensorflow as tf

    cores = os.cpu_count() or 1
    intra = flags.tensorflow_intra_op_parallelism or cores
    inter = flags.tensorflow_inter_op_parallelism or min(2, cores)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


class _Poller:
    def __init__(self, manager, flags: flags_module.Flags, config_models) -> None:
        self._manager = manager
        self._flags = flags
        self._config_models = config_models
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        fs_period = float(self._flags.file_system_poll_wait_seconds)
        config_period = float(self._flags.model_config_file_poll_wait_seconds)
        next_config = time.monotonic() + config_period
        while not self._stop.wait(fs_period):
            if (
                self._flags.model_config_file
                and config_period > 0
                and time.monotonic() >= next_config
            ):
                next_config = time.monotonic() + config_period
                try:
                    models = load_model_server_config(self._flags.model_config_file)
                except ConfigError as exc:  # keep serving the last good config
                    log.error("Ignoring config file change: %s", exc)
                else:
                    if models != self._config_models:
                        log.info("Config file changed: %s", [m.name for m in models])
                        self._config_models = models
                        self._manager.configure(models)
            try:
                self._manager.poll()
            except Exception:  # a poll bug must not stop future polls
                log.exception("poll failed")


def _initial_models(flags: flags_module.Flags) -> list[ModelConfig]:
    if flags.model_config_file:
        return load_model_server_config(flags.model_config_file)
    return [model_from_flags(flags.model_name, flags.model_base_path)]


def run(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT.

    Args:
        argv: command-line arguments (see :mod:`serving.flags`).

    Returns:
        Exit status: 0 after a signal-initiated shutdown, 1 on a config error or a port that
        cannot be bound (one ERROR line, no traceback; checked before any model loads).
    """
    flags = flags_module.parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_large_buffers_on_heap()  # multi-MB requests without fresh page faults per copy
    try:
        models = _initial_models(flags)
        batching = load_batching(flags.batching_parameters_file) if flags.enable_batching else None
        monitoring = load_monitoring(flags.monitoring_config_file)
        check_free(flags.bind_address, flags.port, "gRPC")
        if flags.rest_api_port:
            check_free(flags.bind_address, flags.rest_api_port, "REST")
    except (ConfigError, PortError) as exc:
        log.error("Failed to start server: %s", exc)
        return 1
    _configure_tensorflow(flags)

    # Imported late: these load TensorFlow.
    from serving.core import ServingCore
    from serving.grpc_service import build_server
    from serving.manager import ModelManager
    from serving.metrics import Metrics
    from serving.rest import RestApp, RestServer

    stop = threading.Event()  # set by SIGTERM/SIGINT, also during the first load
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    metrics = Metrics()
    manager = ModelManager(batching=batching, warmup=flags.enable_model_warmup, metrics=metrics)
    metrics.model_names = manager.model_names  # the build-info labels, read at each scrape
    manager.configure(models)
    manager.poll()
    core = ServingCore(manager, metrics)

    max_workers = max(flags.grpc_max_threads, 2 * batching.max_batch_size if batching else 0)
    # The ports were free before the first load; something may have taken them since.
    try:
        grpc_server, grpc_port = build_server(
            core,
            flags.port,
            max_workers,
            flags.grpc_max_message_bytes,
            flags.bind_address,
            flags_module.channel_arguments(flags.grpc_channel_arguments),
        )
    except RuntimeError as exc:
        log.error(
            "Failed to start server: cannot bind gRPC port %d on %s: %s",
            flags.port,
            flags.bind_address,
            exc,
        )
        manager.close()
        return 1
    rest = None
    if flags.rest_api_port:
        try:
            rest = RestServer(RestApp(core, monitoring), flags.rest_api_port, flags.bind_address)
        except PortError as exc:
            log.error("Failed to start server: %s", exc)
            grpc_server.stop(None)
            manager.close()
            return 1
    grpc_server.start()
    log.info("Running gRPC ModelServer at %s ...", host_port(flags.bind_address, grpc_port))
    if rest is not None:
        rest.start()
        log.info("Exporting HTTP/REST API at:%s ...", host_port(flags.bind_address, rest.port))
    poller = _Poller(manager, flags, models)
    poller.start()

    stop.wait()
    log.info(
        "Shutting down: no new calls; waiting up to %.0f s for calls in flight",
        SHUTDOWN_GRACE_SECONDS,
    )
    done = grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
    if rest is not None:
        rest.stop()
    done.wait()
    poller.stop()
    manager.close()
    log.info("Server stopped")
    return 0
