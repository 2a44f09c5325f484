"""Command-line flags of ``python -m serving``: ``tensorflow_model_server``'s names and meanings.

Both ``--flag value`` and ``--flag=value`` work (argparse), and boolean flags accept ``--flag``,
``--flag=true`` and ``--flag=false`` like the real server's absl flags. Defaults are TF Serving's
(``tensorflow_serving/model_servers/main.cc``): gRPC on 8500, REST off (0), file-system poll every
second, config-file polling off (0).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from buildinfo import version_line

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Flags:
    """Parsed server flags (units in the names: seconds, port numbers).

    Attributes:
        port: gRPC port (0 = any free port is not supported by TF Serving; use a real port).
        rest_api_port: REST port, 0 = REST off.
        model_name: model name when serving one model from flags.
        model_base_path: the folder holding integer-named version folders.
        model_config_file: ModelServerConfig text file; when set, model_name/base_path are ignored.
        model_config_file_poll_wait_seconds: re-read the config file this often; 0 = never.
        file_system_poll_wait_seconds: scan base paths for versions this often (> 0).
        enable_batching: merge concurrent Predict calls (see ``serving.batching``).
        batching_parameters_file: BatchingParameters text file (with enable_batching).
        monitoring_config_file: MonitoringConfig text file (Prometheus on the REST port).
        enable_model_warmup: replay ``assets.extra/tf_serving_warmup_requests`` before AVAILABLE.
        tensorflow_intra_op_parallelism: TF intra-op threads; 0 = TensorFlow's default.
        tensorflow_inter_op_parallelism: TF inter-op threads; 0 = TensorFlow's default.
        grpc_max_threads: size of the gRPC handler thread pool.
        grpc_max_message_bytes: max send/receive message size in bytes.
        grpc_channel_arguments: extra gRPC server arguments, ``key=value`` pairs separated by
            commas (see :func:`channel_arguments`).
        bind_address: interface for both ports (not a TF Serving flag: it always binds all
            interfaces, the default here too; tests use 127.0.0.1).
    """

    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    grpc_max_threads: int = 16
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    grpc_channel_arguments: str = ""
    bind_address: str = "0.0.0.0"


HELP = {
    "port": "TCP port of the gRPC API (PredictionService, ModelService).",
    "rest_api_port": "TCP port of the HTTP/REST API (/v1/models/...); 0 = no REST API.",
    "model_name": "Name of the single model given by --model_base_path (the name clients put "
    "in model_spec / the REST URL).",
    "model_base_path": "Folder holding the model's version folders, each named by an integer "
    "(1/, 2/, ...) and containing a SavedModel; the newest is served. Relative "
    "to the working directory. Ignored with --model_config_file.",
    "model_config_file": "ModelServerConfig file (protobuf text format) listing models, base "
    "paths, version policies and labels; replaces --model_name and "
    "--model_base_path. Relative base_path values are resolved against the "
    "working directory.",
    "model_config_file_poll_wait_seconds": "Re-read --model_config_file every this many seconds; "
    "0 = read it once at start-up.",
    "file_system_poll_wait_seconds": "Look for new, removed or changed version folders under "
    "every base path every this many seconds (> 0).",
    "enable_batching": "Merge concurrent Predict calls to one model into one run (true/false; "
    "the bare flag means true).",
    "batching_parameters_file": "BatchingParameters file (protobuf text format) for "
    "--enable_batching; empty = built-in batching defaults.",
    "monitoring_config_file": "MonitoringConfig file (protobuf text format); enables Prometheus "
    "metrics on the REST port (at its prometheus_config.path).",
    "enable_model_warmup": "Replay each version's assets.extra/tf_serving_warmup_requests before "
    "it is reported AVAILABLE (true/false).",
    "tensorflow_intra_op_parallelism": "Threads TensorFlow uses inside one op; 0 = one per CPU "
    "core.",
    "tensorflow_inter_op_parallelism": "Ops TensorFlow runs in parallel; 0 = min(2, CPU cores).",
    "grpc_max_threads": "Threads handling gRPC calls (raised to twice the max batch size with "
    "batching, so a batch can fill).",
    "grpc_max_message_bytes": "Largest gRPC request or response, in bytes.",
    "grpc_channel_arguments": "A comma-separated list of key=value arguments passed to the gRPC "
    "server (e.g. grpc.max_connection_age_ms=30000); a value that parses as a 32-bit integer is "
    "passed as an integer, any other as a string; they override this server's own settings of the "
    "same key.",
    "bind_address": "Interface address both ports listen on (not a tensorflow_model_server "
    "flag: it always listens on all interfaces, as 0.0.0.0 does here); "
    "127.0.0.1 = this machine only.",
}
"""``--help`` text of each flag (the default is appended)."""


_INT32 = (-(2**31), 2**31 - 1)


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """Parse ``--grpc_channel_arguments`` as ``tensorflow_model_server`` does.

    The text is split at commas into ``key=value`` pairs (at the first ``=``); a value that is a
    32-bit signed integer becomes an ``int``, any other value stays a ``str``. gRPC itself ignores
    keys it does not know.

    Args:
        text: e.g. ``"grpc.max_connection_age_ms=30000,grpc.max_concurrent_streams=100"``;
            empty = no arguments.

    Returns:
        ``(key, value)`` pairs in the order given, ready for ``grpc.server(options=...)``.

    Raises:
        ValueError: an entry without ``=`` or with an empty key (TF Serving would crash on it;
            this server refuses to start instead).
    """
    pairs: list[tuple[str, int | str]] = []
    for entry in text.split(",") if text else []:
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments entry {entry!r} is not key=value")
        try:
            number = int(value)
        except ValueError:
            pairs.append((key, value))
            continue
        pairs.append((key, number) if _INT32[0] <= number <= _INT32[1] else (key, value))
    return pairs


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "none"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="A local model server speaking TF Serving's gRPC and REST APIs, with "
        "tensorflow_model_server's flag names. Give --model_base_path (one model) "
        "or --model_config_file. Both --flag value and --flag=value work.",
    )
    parser.add_argument("--version", action="version", version=version_line("fashion-serving"))
    defaults = Flags()
    for name, value in defaults.__dict__.items():
        if isinstance(value, bool):
            parser.add_argument(
                f"--{name}",
                type=_bool,
                nargs="?",
                const=True,
                default=value,
                metavar="true|false",
                help=f"{HELP[name]} Default: {_shown(value)}.",
            )
        else:
            parser.add_argument(
                f"--{name}",
                type=type(value),
                default=value,
                metavar=type(value).__name__.upper(),
                help=f"{HELP[name]} Default: {_shown(value)}.",
            )
    return parser


def parse(argv: list[str] | None = None) -> Flags:
    """Parse command-line arguments.

    Args:
        argv: arguments without the program name; ``None`` = ``sys.argv[1:]``.

    Returns:
        The flags.

    Raises:
        SystemExit: (status 2) on unknown flags, bad values (a malformed
            ``--grpc_channel_arguments`` included), or neither ``--model_base_path`` nor
            ``--model_config_file`` given, as ``tensorflow_model_server`` refuses to start then.
    """
    parser = _parser()
    flags = Flags(**vars(parser.parse_args(argv)))
    if not flags.model_config_file and not flags.model_base_path:
        parser.error("either --model_config_file or --model_base_path must be given")
    if flags.file_system_poll_wait_seconds <= 0:
        parser.error("--file_system_poll_wait_seconds must be > 0")
    try:
        channel_arguments(flags.grpc_channel_arguments)
    except ValueError as exc:
        parser.error(str(exc))
    return flags
