"""KServe transformer entry point: ``python -m gateway.kserve --model_name M --predictor_host H``.

KServe starts a transformer container with arguments of its own (its controller appends
``--model_name <InferenceService name>``, ``--predictor_host <predictor Service>.<namespace>``,
``--http_port 8080`` and, with ``containerConcurrency``, ``--workers N``). This entry point maps
them onto the gateway's settings and then runs the production server (gunicorn with
``gateway/gunicorn.conf.py``) in this process, so the gateway image works as a transformer with
``command: ["python", "-m", "gateway.kserve"]`` and no other change:

========================  ==========================================================
``--model_name``           ``MODEL_NAME`` (the model name in TF Serving's model config)
``--predictor_host``       ``SERVING_GRPC_ADDRESS``; without a port, port 80: KServe's
                           predictor Service maps port 80 to the predictor container's
                           first port, which is TF Serving's gRPC port in deploy/kserve
``--http_port``            the port of ``GATEWAY_BIND`` (its host is kept; 0.0.0.0 if unset)
``--workers``              ``GUNICORN_WORKERS``
``--protocol``             accepted and ignored: the gateway speaks TF Serving's gRPC API
========================  ==========================================================

Variables already set in the environment are overridden only by arguments actually given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

PREDICTOR_SERVICE_PORT = 80
"""Port of KServe's predictor Service when ``--predictor_host`` names none."""

GUNICORN_CONFIG = Path(__file__).resolve().parent / "gunicorn.conf.py"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.kserve",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--model_name", help="model name in TF Serving (sets MODEL_NAME)")
    parser.add_argument(
        "--predictor_host",
        help="host[:port] of the predictor's gRPC API (sets SERVING_GRPC_ADDRESS; default "
        f"port {PREDICTOR_SERVICE_PORT})",
    )
    parser.add_argument("--http_port", type=int, help="HTTP port to listen on (all interfaces)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes")
    parser.add_argument("--protocol", help="ignored: the predictor is always TF Serving's gRPC")
    return parser


def _with_port(host: str) -> str:
    if host.startswith("[") and "]:" in host:  # [v6]:port
        return host
    if ":" in host and not host.startswith("["):
        return host
    return f"{host}:{PREDICTOR_SERVICE_PORT}"


def environment(argv: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The gateway's environment for KServe's transformer arguments.

    Args:
        argv: the arguments KServe passes (see the module docstring).
        environ: the container's environment.

    Returns:
        A copy of ``environ`` with ``MODEL_NAME``, ``SERVING_GRPC_ADDRESS``, ``GATEWAY_BIND`` and
        ``GUNICORN_WORKERS`` set from the arguments that were given (the image sets
        ``GATEWAY_BIND=0.0.0.0:8080``, so ``--http_port`` keeps listening on all interfaces).

    Raises:
        SystemExit: code 2 for an unknown argument or a bad value (argparse's message).
    """
    args = _parser().parse_args(argv)
    env = dict(environ)
    if args.model_name:
        env["MODEL_NAME"] = args.model_name
    if args.predictor_host:
        env["SERVING_GRPC_ADDRESS"] = _with_port(args.predictor_host)
    if args.http_port is not None:
        host = env.get("GATEWAY_BIND", "").rpartition(":")[0] or "0.0.0.0"
        env["GATEWAY_BIND"] = f"{host}:{args.http_port}"
    if args.workers is not None:
        env["GUNICORN_WORKERS"] = str(args.workers)
    return env


def main(argv: list[str] | None = None) -> None:
    """Map KServe's arguments, then replace this process with gunicorn running the gateway.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` if None.

    Raises:
        SystemExit: code 2 for bad arguments; gunicorn's own exit status otherwise.
    """
    env = environment(sys.argv[1:] if argv is None else argv, os.environ)
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG)]
    sys.stdout.flush()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
