"""Start and stop ``python -m serving`` as a subprocess: for tests, the nightly job and benchmarks.

Usage::

    with ModelServerProcess(["--model_name", "fashion", "--model_base_path", "models/fashion"],
                            log_path="logs/serving.log", rest=True) as server:
        channel = grpc.insecure_channel(server.grpc_address)

Ready means: GetModelStatus for ``wait_for_model`` reports a version AVAILABLE. Imports only
gRPC and the generated messages (``serving_api.protos``), never the TensorFlow runtime.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import grpc

from serving_api import protos

REPO_ROOT = Path(__file__).resolve().parent.parent


PROBE_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 100),
)
"""Reconnect backoff of the readiness probe's channel. The port opens only once the model is
loaded (as in TF Serving), so the first connects fail; with gRPC's default backoff (1 s, x1.6 per
failure, jittered) the probe then sat in backoff for up to ~5 s after the server was listening
(measured: "Running gRPC ModelServer" logged 5.0 s before the probe saw AVAILABLE)."""


class ServerStartError(RuntimeError):
    """The server exited or did not report the model AVAILABLE in time (see its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_name(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--model_name="):
            return arg.split("=", 1)[1]
        if arg == "--model_name" and i + 1 < len(args):
            return args[i + 1]
    return None


class ModelServerProcess:
    """``python -m serving`` in a subprocess on chosen or free ports.

    Args:
        args: server flags, without ``--port``/``--rest_api_port`` (added here).
        port: gRPC port; None = a free one.
        rest: serve REST too (on ``rest_port`` or a free port).
        rest_port: REST port when ``rest`` is set; None = a free one.
        log_path: file for the server's stdout/stderr (appended); None = a temp file next to
            nothing (``/dev/null`` is never used: logs are how failures are explained).
        wait_for_model: model to wait for; default: ``--model_name`` from args, else none (then
            ready = the gRPC port answers). ``False``: wait for no model even with
            ``--model_name`` (a server started with nothing to serve).
        start_timeout: seconds to wait for readiness.
        env: extra environment variables (``TF_CPP_MIN_LOG_LEVEL=2`` is set by default).
        cwd: working directory of the server (default: the repository root).

    Attributes:
        grpc_address: ``127.0.0.1:<port>``.
        rest_url: ``http://127.0.0.1:<port>`` or None.
        startup_seconds: time from spawn to ready, seconds.
    """

    def __init__(
        self,
        args: list[str],
        *,
        port: int | None = None,
        rest: bool = False,
        rest_port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        wait_for_model: str | Literal[False] | None = None,
        start_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ):
        self.args = list(args)
        self.port = port or free_port()
        self.rest_port = (rest_port or free_port()) if rest else 0
        self.log_path = (
            Path(log_path)
            if log_path
            else Path(os.environ.get("TMPDIR", "/tmp")) / f"serving-{self.port}.log"
        )
        self.wait_for_model = (
            None if wait_for_model is False else (wait_for_model or _model_name(self.args))
        )
        self.start_timeout = start_timeout
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        self.cwd = str(cwd or REPO_ROOT)
        self.grpc_address = f"127.0.0.1:{self.port}"
        self.rest_url = f"http://127.0.0.1:{self.rest_port}" if rest else None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._started = 0.0
        self._log = None

    def __enter__(self) -> ModelServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the server and wait until it is ready (:meth:`spawn`, then :meth:`wait_ready`).

        Raises:
            ServerStartError: it exited or timed out (the process is stopped; the message ends
                with the log's last lines).
        """
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start ``python -m serving`` and return at once (TensorFlow loads in the child)."""
        command = [
            sys.executable,
            "-m",
            "serving",
            f"--port={self.port}",
            f"--rest_api_port={self.rest_port}",
            "--bind_address=127.0.0.1",
            *self.args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )

    def wait_ready(self) -> None:
        """Wait until the model is AVAILABLE, up to ``start_timeout`` seconds after :meth:`spawn`.

        Raises:
            ServerStartError: it exited or timed out (the process is stopped).
        """
        try:
            self._wait_ready(self._started + self.start_timeout)
        except ServerStartError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._started

    def _wait_ready(self, deadline: float) -> None:
        channel = grpc.insecure_channel(self.grpc_address, options=PROBE_CHANNEL_OPTIONS)
        stub = protos.model_service_pb2_grpc.ModelServiceStub(channel)
        request = protos.get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.wait_for_model or ""
        available = protos.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"server exited with {self.process.returncode}\n{self.log_tail()}"
                    )
                try:
                    response = stub.GetModelStatus(request, timeout=2)
                except grpc.RpcError as exc:
                    if not self.wait_for_model and exc.code() != grpc.StatusCode.UNAVAILABLE:
                        return  # the port answers; no model to wait for
                else:
                    if any(s.state == available for s in response.model_version_status):
                        return
                time.sleep(0.1)  # poll interval while the server loads
        finally:
            channel.close()
        raise ServerStartError(f"not ready after {self.start_timeout} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it has exited (negative: killed by that signal); None
        while it runs or before :meth:`spawn`."""
        return self.process.poll() if self.process is not None else None

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Returns:
            The exit status (None if never started).
        """
        if self.process is None:
            return None
        self.terminate()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code
