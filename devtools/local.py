"""``make run`` / ``make serve``: the whole product on one machine, without Docker.

``python -m devtools.local`` starts the local model server (``python -m serving``) on
``models/`` and the gateway in the background (logs in ``logs/``), waits for the gateway's
``/health``, runs the nightly job over ``data/incoming/``, prints the summary, and stops both
services, also when the job fails. When ``data/incoming/`` holds no image it is first seeded with
the test split of the data set (``FASHION_DATA_DIR``). ``--serve`` instead keeps model server (gRPC
``GRPC_PORT``, default 8500; REST ``REST_PORT``, default 8501) and gateway (``GATEWAY_PORT``,
default 8080) in the foreground until Ctrl-C or SIGTERM (either prints a ``stopped`` line and exits
0), for REST callers; other ports let a second stack run beside a first one.

Exit codes are the nightly job's (0 all filed, 1 some quarantined or left for retry, 75 retry
later, 78 bad configuration), and 78 when there is no data set or no model to serve.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from batch.reports import rate_text
from batch.settings import EXIT_CONFIG, parse_settings
from contract import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]
DATASET_REPO = "https://github.com/alexeygrigorev/clothing-dataset-small"
MODEL_NAME = "fashion"


RUN_TAG = "make run"
SERVE_TAG = "make serve"
"""The prefixes of the launcher's own lines, ``[make run] ...`` and ``[make serve] ...``."""


def _say(message: str, tag: str = RUN_TAG) -> None:
    print(f"[{tag}] {message}", flush=True)


def _images_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def default_data_dir() -> Path:
    """The data set folder: ``FASHION_DATA_DIR``, else ``../shared/data/clothing-dataset-small``."""
    env = os.environ.get("FASHION_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "clothing-dataset-small"


def seed_incoming(incoming: Path, data_dir: Path) -> int:
    """Copy the data set's ``test/`` split into ``incoming`` (``<class>/<file>``), if it is empty.

    Files are copied under a hidden temporary name and renamed, so the job never sees a half-copied
    photo; modification times are kept (``shutil.copy2``), so the job does not take the fresh
    copies for files still being written.

    Args:
        incoming: the job's incoming folder.
        data_dir: folder-per-class data set with a ``test/`` split.

    Returns:
        The number of photos copied (0 when ``incoming`` already held images).

    Raises:
        FileNotFoundError: ``incoming`` is empty and ``data_dir/test`` does not exist.
    """
    if _images_under(incoming):
        return 0
    test_split = data_dir / "test"
    if not test_split.is_dir():
        raise FileNotFoundError(test_split)
    copied = 0
    for source in sorted(_images_under(test_split)):
        target = incoming / source.relative_to(test_split)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        shutil.copy2(source, partial)
        os.replace(partial, target)
        copied += 1
    return copied


TF_THREADS = (1, 2)
"""TensorFlow ``(intra_op, inter_op)`` threads of the local model server (and of the benchmark's
in-process rival, which gets the same settings)."""

SERVER_FLAGS = (
    f"--tensorflow_intra_op_parallelism={TF_THREADS[0]}",
    f"--tensorflow_inter_op_parallelism={TF_THREADS[1]}",
    "--enable_batching=true",
    f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}",
)
"""Model-server flags of the local stack. On a 2-core host shared with the gateway, one TF thread
per model call leaves the other core to image decoding: measured here, the nightly job went from
180 to 203 images/s and ``/predict`` p50 from 14.7 to 12.2 ms (TF's idle intra-op threads spin on
both cores otherwise). Parallel calls still use both cores (two batch threads). Batching is the
production file's (``serving/batching.config``, no timeout): concurrent ``/predict`` calls merge
into one model run (see serving/batching.config for the measurement), a lone call runs at once.
"""


SERVE_PORTS = {"GATEWAY_PORT": 8080, "GRPC_PORT": 8500, "REST_PORT": 8501}
"""``make serve``'s ports: environment variable and default."""


def serve_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The ports ``--serve`` listens on, from ``GATEWAY_PORT``, ``GRPC_PORT`` and ``REST_PORT``.

    Args:
        env: the environment (an unset or empty variable takes its default).

    Returns:
        ``{"GATEWAY_PORT": int, "GRPC_PORT": int, "REST_PORT": int}``.

    Raises:
        ValueError: a value is not an integer in 1..65535, or two ports are equal.
    """
    ports = {}
    for name, default in SERVE_PORTS.items():
        raw = env.get(name) or str(default)
        # ASCII digits only: int() alone would also take " 80", "+80" and "8_0".
        if re.fullmatch(r"[0-9]{1,5}", raw) is None or not 0 < int(raw) < 65536:
            raise ValueError(f"{name}={raw!r} is not a TCP port (1..65535)")
        ports[name] = int(raw)
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"the three ports must differ, got {ports}")
    return ports


def check_ports_free(ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    """Refuses ports another process holds, before anything starts.

    Without it a taken gRPC port let ``make serve`` probe the other stack's server and report
    itself ready, and a taken gateway port ended in a traceback.

    Args:
        ports: :func:`serve_ports`'s mapping.
        host: the address both processes bind.

    Raises:
        ValueError: one line naming the variable, the port and the system's reason.
    """
    from serving.ports import PortError, check_free

    for name, port in ports.items():
        try:
            check_free(host, port, "TCP")
        except PortError as exc:
            raise ValueError(
                f"{name}={port} is in use ({exc}): stop what holds it or set {name} to a free port"
            ) from None


def log_paths(logs: Path, ports: Mapping[str, int] | None) -> tuple[Path, Path]:
    """The model server's and the gateway's log files of one stack.

    ``serving.log`` and ``gateway.log`` for free ports (``make run``, the benchmark) and for
    :data:`SERVE_PORTS`; a stack on moved ports (a second ``make serve`` beside a first) gets
    ``serving-<GRPC_PORT>.log`` and ``gateway-<GATEWAY_PORT>.log``, so two stacks never write
    one file.

    Args:
        logs: the logs folder.
        ports: :func:`serve_ports`'s mapping, or None.

    Returns:
        ``(serving log, gateway log)``.
    """
    if ports is None or dict(ports) == SERVE_PORTS:
        return logs / "serving.log", logs / "gateway.log"
    return logs / f"serving-{ports['GRPC_PORT']}.log", logs / f"gateway-{ports['GATEWAY_PORT']}.log"


def server_args(base: Path) -> list[str]:
    """The local model server's command line for the model at ``base`` (make run, serve, bench)."""
    return ["--model_name", MODEL_NAME, "--model_base_path", str(base), *SERVER_FLAGS]


def start_stack(
    stack: ExitStack,
    logs: Path,
    *,
    ports: Mapping[str, int] | None,
    gateway_env: Mapping[str, str] | None = None,
    gateway_server: str = "dev",
    tag: str = RUN_TAG,
):
    """Start the model server and the gateway (stopped when ``stack`` closes).

    Args:
        stack: receives both processes.
        logs: folder of the two logs (:func:`log_paths`).
        ports: ``serve_ports()``'s mapping, or None for free ports.
        gateway_env: extra gateway environment (e.g. ``CACHE_SIZE=0`` in the benchmark).
        gateway_server: ``"dev"`` or ``"gunicorn"`` (see ``gateway.launcher``).
        tag: prefix of the two readiness lines (:data:`RUN_TAG` or :data:`SERVE_TAG`).

    Returns:
        ``(ModelServerProcess, GatewayProcess)``, both ready.

    Raises:
        serving.launcher.ServerStartError, RuntimeError: a process did not start.
    """
    from gateway.launcher import GatewayProcess
    from serving.launcher import ModelServerProcess

    base = ROOT / "models" / MODEL_NAME
    started = time.monotonic()
    serving_log, gateway_log = log_paths(logs, ports)
    server = ModelServerProcess(
        server_args(base),
        port=ports["GRPC_PORT"] if ports else None,
        rest=True,
        rest_port=ports["REST_PORT"] if ports else None,
        log_path=serving_log,
    )
    gateway = GatewayProcess(
        {
            "SERVING_GRPC_ADDRESS": server.grpc_address,
            "MODEL_NAME": MODEL_NAME,
            **(gateway_env or {}),
        },
        server=gateway_server,
        port=ports["GATEWAY_PORT"] if ports else None,
        log_path=gateway_log,
    )
    # Both start at once: the gateway boots (Flask, gRPC, Pillow) while the server imports
    # TensorFlow and loads the model; it answers /health 503 until the model is AVAILABLE.
    server.spawn()
    stack.callback(server.stop)
    gateway.spawn()
    stack.callback(gateway.stop)
    server.wait_ready()
    _say(
        f"model server ready on {server.grpc_address} (REST {server.rest_url}) in "
        f"{time.monotonic() - started:.1f} s; log {serving_log}",
        tag,
    )
    gateway.wait_ready()
    _say(f"gateway healthy on {gateway.url}; log {gateway_log}", tag)
    return server, gateway


def _print_summary(report_dir: Path | None) -> None:
    if report_dir is None or not (report_dir / "summary.json").is_file():
        return
    summary = json.loads((report_dir / "summary.json").read_text())
    _say(
        f"run {summary['run_id']}: {summary['files']} files in {summary['duration_seconds']} s "
        f"({rate_text(summary['images_per_second'])}), "
        f"model version(s) {summary['model_versions']}"
    )
    print(
        "    per category:  "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["counts_by_category"].items()))
    )
    print(
        "    per status:    "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary["counts_by_status"].items()))
    )
    for name in ("report.csv", "summary.json", "report.html"):
        _say(f"report: {report_dir / name}")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that stop ``--serve`` cleanly: Ctrl-C, and SIGTERM from ``kill`` or a supervisor."""


class _Stop(BaseException):
    """A stop signal arrived; ``args[0]`` is its name (``SIGINT``, ``SIGTERM``). A BaseException,
    as KeyboardInterrupt is, so no ``except Exception`` on the way swallows it."""


def _raise_stop(signum: int, _frame: object) -> None:
    for stop in STOP_SIGNALS:  # a second signal must not cut the shutdown short
        signal.signal(stop, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


WATCH_SECONDS = 1.0
"""How often ``--serve`` checks that the model server and the gateway are still running."""


def _exited(server, gateway) -> str | None:
    """Names the first of the two processes (their launchers' ``returncode``) that has exited by
    itself, with its status; None while both run."""
    for name, process in (("model server", server), ("gateway", gateway)):
        code = process.returncode
        if code is not None:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            return f"the {name} exited ({how})"
    return None


def _serve(logs: Path, ports: Mapping[str, int]) -> int:
    """Serve in the foreground until SIGINT or SIGTERM, then stop both processes.

    Either signal (also while they start) stops the gateway and the model server and prints one
    ``stopped (<signal>)`` line after they are down, so a supervisor's log says why ``make serve``
    ended. If either process exits by itself (crash, OOM kill), the other is stopped too, with a
    line naming which one and how, so a supervisor restarts the pair instead of keeping a gateway
    that answers 503 forever.

    Returns:
        0 once both are stopped after a signal; 1 when one of them exited by itself.
    """
    for stop in STOP_SIGNALS:
        signal.signal(stop, _raise_stop)
    with ExitStack() as stack:
        try:
            server, gateway = start_stack(stack, logs, ports=ports, tag=SERVE_TAG)
            _say(
                f"serving; try: curl -F image=@photo.jpg {gateway.url}/predict  (Ctrl-C stops)",
                SERVE_TAG,
            )
            while (why := _exited(server, gateway)) is None:
                time.sleep(WATCH_SECONDS)
            _say(f"{why}: stopping the other one; see {logs}", SERVE_TAG)
        except _Stop as stop:
            name = stop.args[0]
            _say(f"stopping ({name}): shutting down the gateway and the model server", SERVE_TAG)
        else:
            name = None
    if name is None:
        _say(f"stopped: {why}", SERVE_TAG)
        return 1
    _say(f"stopped ({name}): model server and gateway shut down", SERVE_TAG)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the nightly job through a local stack (or, with ``--serve``, just serve).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit code (see the module docstring).
    """
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="serve in the foreground (gRPC $GRPC_PORT or 8500, REST $REST_PORT or 8501, gateway "
        "$GATEWAY_PORT or 8080) until Ctrl-C instead of running the job",
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    logs = ROOT / "logs"
    logs.mkdir(exist_ok=True)

    from serving.versions import versions_on_disk  # the server's own rule for version folders

    if not versions_on_disk(str(ROOT / "models" / MODEL_NAME)):
        _say(
            f"no model version under models/{MODEL_NAME}/: run `make train export` first",
            SERVE_TAG if args.serve else RUN_TAG,
        )
        return EXIT_CONFIG

    if args.serve:
        try:
            ports = serve_ports(os.environ)
            check_ports_free(ports)
        except ValueError as exc:
            _say(str(exc), SERVE_TAG)
            return EXIT_CONFIG
        return _serve(logs, ports)

    _command, settings = parse_settings(["run"], os.environ)
    data_dir = default_data_dir()
    try:
        seeded = seed_incoming(settings.incoming, data_dir)
    except FileNotFoundError:
        _say(f"{settings.incoming}/ holds no image and there is no data set at {data_dir}.")
        _say(
            f"Get it with: git clone {DATASET_REPO} && export FASHION_DATA_DIR=$PWD/"
            "clothing-dataset-small   (or drop your own photos into data/incoming/)"
        )
        return EXIT_CONFIG
    if seeded:
        _say(
            f"{settings.incoming}/ was empty: copied the {seeded} test-split photos of "
            f"{data_dir} there"
        )

    from batch.runner import run

    with ExitStack() as stack:
        _, gateway = start_stack(stack, logs, ports=None)
        _command, settings = parse_settings(["run", "--gateway", gateway.url], os.environ)
        result = run(settings)
        _say(result.message)
        _print_summary(result.report_dir)
        _say("stopping gateway and model server")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
